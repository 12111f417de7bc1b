// Original file: proto/gatehouse/v1/agent_link.proto


export interface BodyChunk {
  'data'?: (Buffer | Uint8Array | string);
}

export interface BodyChunk__Output {
  'data': (Buffer);
}
