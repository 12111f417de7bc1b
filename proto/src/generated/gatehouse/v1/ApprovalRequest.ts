// Original file: proto/gatehouse/v1/agent_link.proto


export interface ApprovalRequest {
  'id'?: (string);
  'sessionId'?: (string);
  'exchangeId'?: (string);
  'connection'?: (string);
  'policy'?: (string);
  'rule'?: (string);
  'stage'?: (string);
  'message'?: (string);
  'preview'?: (string);
  'matched'?: (string)[];
}

export interface ApprovalRequest__Output {
  'id': (string);
  'sessionId': (string);
  'exchangeId': (string);
  'connection': (string);
  'policy': (string);
  'rule': (string);
  'stage': (string);
  'message': (string);
  'preview': (string);
  'matched': (string)[];
}
