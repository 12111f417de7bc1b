// Original file: proto/gatehouse/v1/agent_link.proto


export interface ServerSentEvent {
  'event'?: (string);
  'data'?: (string);
}

export interface ServerSentEvent__Output {
  'event': (string);
  'data': (string);
}
