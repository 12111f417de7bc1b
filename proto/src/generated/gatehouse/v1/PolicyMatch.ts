// Original file: proto/gatehouse/v1/agent_link.proto


export interface PolicyMatch {
  'text'?: (string);
  'system'?: (string);
  'model'?: (string);
  'tool'?: (string);
  'toolInput'?: (string);
  'toolResult'?: (string);
  'maxTokensAbove'?: (number);
}

export interface PolicyMatch__Output {
  'text': (string);
  'system': (string);
  'model': (string);
  'tool': (string);
  'toolInput': (string);
  'toolResult': (string);
  'maxTokensAbove': (number);
}
