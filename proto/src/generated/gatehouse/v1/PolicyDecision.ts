// Original file: proto/gatehouse/v1/agent_link.proto


export interface PolicyDecision {
  'policy'?: (string);
  'rule'?: (string);
  'action'?: (string);
  'stage'?: (string);
  'message'?: (string);
  'matched'?: (string)[];
  'approvalId'?: (string);
  'approvalStatus'?: (string);
  'decidedBy'?: (string);
  'reason'?: (string);
  'toolUseId'?: (string);
  'toolName'?: (string);
  'preview'?: (string);
}

export interface PolicyDecision__Output {
  'policy': (string);
  'rule': (string);
  'action': (string);
  'stage': (string);
  'message': (string);
  'matched': (string)[];
  'approvalId': (string);
  'approvalStatus': (string);
  'decidedBy': (string);
  'reason': (string);
  'toolUseId': (string);
  'toolName': (string);
  'preview': (string);
}
