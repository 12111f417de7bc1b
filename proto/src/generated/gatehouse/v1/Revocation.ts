// Original file: proto/gatehouse/v1/agent_link.proto

import type { RevokedSession as _gatehouse_v1_RevokedSession, RevokedSession__Output as _gatehouse_v1_RevokedSession__Output } from '../../gatehouse/v1/RevokedSession.js';

export interface Revocation {
  'sessions'?: (_gatehouse_v1_RevokedSession)[];
}

export interface Revocation__Output {
  'sessions': (_gatehouse_v1_RevokedSession__Output)[];
}
