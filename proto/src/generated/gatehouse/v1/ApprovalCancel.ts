// Original file: proto/gatehouse/v1/agent_link.proto


export interface ApprovalCancel {
  'id'?: (string);
}

export interface ApprovalCancel__Output {
  'id': (string);
}
