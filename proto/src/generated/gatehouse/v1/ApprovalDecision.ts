// Original file: proto/gatehouse/v1/agent_link.proto

import type { Long } from '@grpc/proto-loader';

export interface ApprovalDecision {
  'id'?: (string);
  'status'?: (string);
  'decidedBy'?: (string);
  'reason'?: (string);
  'decidedAtUnixMs'?: (number | string | Long);
}

export interface ApprovalDecision__Output {
  'id': (string);
  'status': (string);
  'decidedBy': (string);
  'reason': (string);
  'decidedAtUnixMs': (number);
}
