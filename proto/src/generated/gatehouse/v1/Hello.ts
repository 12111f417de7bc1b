// Original file: proto/gatehouse/v1/agent_link.proto


export interface Hello {
  'agentId'?: (string);
  'version'?: (string);
  'capabilities'?: (string)[];
  'connections'?: (string)[];
  'proxyUrl'?: (string);
}

export interface Hello__Output {
  'agentId': (string);
  'version': (string);
  'capabilities': (string)[];
  'connections': (string)[];
  'proxyUrl': (string);
}
