// Original file: proto/gatehouse/v1/agent_link.proto

import type { Long } from '@grpc/proto-loader';

export interface RevokedSession {
  'sessionId'?: (string);
  'expiresAtUnixMs'?: (number | string | Long);
}

export interface RevokedSession__Output {
  'sessionId': (string);
  'expiresAtUnixMs': (number);
}
