// Original file: proto/gatehouse/v1/agent_link.proto


export interface VerificationKey {
  'kid'?: (string);
  'jwkJson'?: (string);
}

export interface VerificationKey__Output {
  'kid': (string);
  'jwkJson': (string);
}
