// Original file: proto/gatehouse/v1/agent_link.proto

import type { Long } from '@grpc/proto-loader';

export interface Heartbeat {
  'sentAtUnixMs'?: (number | string | Long);
  'spoolPending'?: (number | string | Long);
}

export interface Heartbeat__Output {
  'sentAtUnixMs': (number);
  'spoolPending': (number);
}
