// Original file: proto/gatehouse/v1/agent_link.proto


export interface CredentialRef {
  'env'?: (string);
  'scheme'?: (string);
  'username'?: (string);
  'source'?: "env";
}

export interface CredentialRef__Output {
  'env'?: (string);
  'scheme': (string);
  'username': (string);
  'source'?: "env";
}
