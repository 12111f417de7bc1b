// Original file: proto/gatehouse/v1/agent_link.proto

import type { Welcome as _gatehouse_v1_Welcome, Welcome__Output as _gatehouse_v1_Welcome__Output } from '../../gatehouse/v1/Welcome.js';
import type { AgentConfig as _gatehouse_v1_AgentConfig, AgentConfig__Output as _gatehouse_v1_AgentConfig__Output } from '../../gatehouse/v1/AgentConfig.js';
import type { Ack as _gatehouse_v1_Ack, Ack__Output as _gatehouse_v1_Ack__Output } from '../../gatehouse/v1/Ack.js';
import type { Revocation as _gatehouse_v1_Revocation, Revocation__Output as _gatehouse_v1_Revocation__Output } from '../../gatehouse/v1/Revocation.js';
import type { ApprovalDecision as _gatehouse_v1_ApprovalDecision, ApprovalDecision__Output as _gatehouse_v1_ApprovalDecision__Output } from '../../gatehouse/v1/ApprovalDecision.js';

export interface ControlMessage {
  'welcome'?: (_gatehouse_v1_Welcome | null);
  'config'?: (_gatehouse_v1_AgentConfig | null);
  'ack'?: (_gatehouse_v1_Ack | null);
  'revocation'?: (_gatehouse_v1_Revocation | null);
  'approvalDecision'?: (_gatehouse_v1_ApprovalDecision | null);
  'msg'?: "welcome"|"config"|"ack"|"revocation"|"approvalDecision";
}

export interface ControlMessage__Output {
  'welcome'?: (_gatehouse_v1_Welcome__Output | null);
  'config'?: (_gatehouse_v1_AgentConfig__Output | null);
  'ack'?: (_gatehouse_v1_Ack__Output | null);
  'revocation'?: (_gatehouse_v1_Revocation__Output | null);
  'approvalDecision'?: (_gatehouse_v1_ApprovalDecision__Output | null);
  'msg'?: "welcome"|"config"|"ack"|"revocation"|"approvalDecision";
}
