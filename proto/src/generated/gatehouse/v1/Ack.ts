// Original file: proto/gatehouse/v1/agent_link.proto

import type { Long } from '@grpc/proto-loader';

export interface Ack {
  'upToSeq'?: (number | string | Long);
}

export interface Ack__Output {
  'upToSeq': (number);
}
