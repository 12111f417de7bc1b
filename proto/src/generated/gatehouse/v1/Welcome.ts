// Original file: proto/gatehouse/v1/agent_link.proto

import type { AgentConfig as _gatehouse_v1_AgentConfig, AgentConfig__Output as _gatehouse_v1_AgentConfig__Output } from '../../gatehouse/v1/AgentConfig.js';

export interface Welcome {
  'controlPlaneId'?: (string);
  'heartbeatIntervalMs'?: (number);
  'config'?: (_gatehouse_v1_AgentConfig | null);
}

export interface Welcome__Output {
  'controlPlaneId': (string);
  'heartbeatIntervalMs': (number);
  'config': (_gatehouse_v1_AgentConfig__Output | null);
}
