// Original file: proto/gatehouse/v1/agent_link.proto

import type { Connection as _gatehouse_v1_Connection, Connection__Output as _gatehouse_v1_Connection__Output } from '../../gatehouse/v1/Connection.js';
import type { VerificationKey as _gatehouse_v1_VerificationKey, VerificationKey__Output as _gatehouse_v1_VerificationKey__Output } from '../../gatehouse/v1/VerificationKey.js';
import type { RevokedSession as _gatehouse_v1_RevokedSession, RevokedSession__Output as _gatehouse_v1_RevokedSession__Output } from '../../gatehouse/v1/RevokedSession.js';
import type { MaskingPattern as _gatehouse_v1_MaskingPattern, MaskingPattern__Output as _gatehouse_v1_MaskingPattern__Output } from '../../gatehouse/v1/MaskingPattern.js';
import type { Policy as _gatehouse_v1_Policy, Policy__Output as _gatehouse_v1_Policy__Output } from '../../gatehouse/v1/Policy.js';

export interface AgentConfig {
  'connections'?: (_gatehouse_v1_Connection)[];
  'tokenKeys'?: (_gatehouse_v1_VerificationKey)[];
  'revoked'?: (_gatehouse_v1_RevokedSession)[];
  'maskingPatterns'?: (_gatehouse_v1_MaskingPattern)[];
  'policies'?: (_gatehouse_v1_Policy)[];
  'approvalTimeoutSeconds'?: (number);
}

export interface AgentConfig__Output {
  'connections': (_gatehouse_v1_Connection__Output)[];
  'tokenKeys': (_gatehouse_v1_VerificationKey__Output)[];
  'revoked': (_gatehouse_v1_RevokedSession__Output)[];
  'maskingPatterns': (_gatehouse_v1_MaskingPattern__Output)[];
  'policies': (_gatehouse_v1_Policy__Output)[];
  'approvalTimeoutSeconds': (number);
}
