// Original file: proto/gatehouse/v1/agent_link.proto

import type { PolicyMatch as _gatehouse_v1_PolicyMatch, PolicyMatch__Output as _gatehouse_v1_PolicyMatch__Output } from '../../gatehouse/v1/PolicyMatch.js';

export interface PolicyRule {
  'name'?: (string);
  'when'?: (string);
  'match'?: (_gatehouse_v1_PolicyMatch | null);
  'action'?: (string);
  'message'?: (string);
}

export interface PolicyRule__Output {
  'name': (string);
  'when': (string);
  'match': (_gatehouse_v1_PolicyMatch__Output | null);
  'action': (string);
  'message': (string);
}
