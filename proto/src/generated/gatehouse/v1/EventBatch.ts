// Original file: proto/gatehouse/v1/agent_link.proto

import type { Long } from '@grpc/proto-loader';

export interface EventBatch {
  'firstSeq'?: (number | string | Long);
  'events'?: (Buffer | Uint8Array | string)[];
}

export interface EventBatch__Output {
  'firstSeq': (number);
  'events': (Buffer)[];
}
