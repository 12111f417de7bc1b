// Original file: proto/gatehouse/v1/agent_link.proto

import type { SessionEvent as _gatehouse_v1_SessionEvent, SessionEvent__Output as _gatehouse_v1_SessionEvent__Output } from '../../gatehouse/v1/SessionEvent.js';
import type { Long } from '@grpc/proto-loader';

export interface EventBatch {
  'firstSeq'?: (number | string | Long);
  'events'?: (_gatehouse_v1_SessionEvent)[];
}

export interface EventBatch__Output {
  'firstSeq': (number);
  'events': (_gatehouse_v1_SessionEvent__Output)[];
}
