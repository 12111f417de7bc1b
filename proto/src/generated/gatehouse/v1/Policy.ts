// Original file: proto/gatehouse/v1/agent_link.proto

import type { PolicyRule as _gatehouse_v1_PolicyRule, PolicyRule__Output as _gatehouse_v1_PolicyRule__Output } from '../../gatehouse/v1/PolicyRule.js';

export interface Policy {
  'name'?: (string);
  'connections'?: (string)[];
  'rules'?: (_gatehouse_v1_PolicyRule)[];
}

export interface Policy__Output {
  'name': (string);
  'connections': (string)[];
  'rules': (_gatehouse_v1_PolicyRule__Output)[];
}
