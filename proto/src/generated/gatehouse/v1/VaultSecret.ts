// Original file: proto/gatehouse/v1/agent_link.proto


export interface VaultSecret {
  'path'?: (string);
  'key'?: (string);
  'kv'?: (number);
  'dynamic'?: (boolean);
}

export interface VaultSecret__Output {
  'path': (string);
  'key': (string);
  'kv': (number);
  'dynamic': (boolean);
}
