// Original file: proto/gatehouse/v1/agent_link.proto

import type { Hello as _gatehouse_v1_Hello, Hello__Output as _gatehouse_v1_Hello__Output } from '../../gatehouse/v1/Hello.js';
import type { Heartbeat as _gatehouse_v1_Heartbeat, Heartbeat__Output as _gatehouse_v1_Heartbeat__Output } from '../../gatehouse/v1/Heartbeat.js';
import type { EventBatch as _gatehouse_v1_EventBatch, EventBatch__Output as _gatehouse_v1_EventBatch__Output } from '../../gatehouse/v1/EventBatch.js';
import type { ApprovalRequest as _gatehouse_v1_ApprovalRequest, ApprovalRequest__Output as _gatehouse_v1_ApprovalRequest__Output } from '../../gatehouse/v1/ApprovalRequest.js';
import type { ApprovalCancel as _gatehouse_v1_ApprovalCancel, ApprovalCancel__Output as _gatehouse_v1_ApprovalCancel__Output } from '../../gatehouse/v1/ApprovalCancel.js';

export interface AgentMessage {
  'hello'?: (_gatehouse_v1_Hello | null);
  'heartbeat'?: (_gatehouse_v1_Heartbeat | null);
  'events'?: (_gatehouse_v1_EventBatch | null);
  'approvalRequest'?: (_gatehouse_v1_ApprovalRequest | null);
  'approvalCancel'?: (_gatehouse_v1_ApprovalCancel | null);
  'msg'?: "hello"|"heartbeat"|"events"|"approvalRequest"|"approvalCancel";
}

export interface AgentMessage__Output {
  'hello'?: (_gatehouse_v1_Hello__Output | null);
  'heartbeat'?: (_gatehouse_v1_Heartbeat__Output | null);
  'events'?: (_gatehouse_v1_EventBatch__Output | null);
  'approvalRequest'?: (_gatehouse_v1_ApprovalRequest__Output | null);
  'approvalCancel'?: (_gatehouse_v1_ApprovalCancel__Output | null);
  'msg'?: "hello"|"heartbeat"|"events"|"approvalRequest"|"approvalCancel";
}
