// Original file: proto/gatehouse/v1/agent_link.proto

import type { RequestHead as _gatehouse_v1_RequestHead, RequestHead__Output as _gatehouse_v1_RequestHead__Output } from '../../gatehouse/v1/RequestHead.js';
import type { BodyChunk as _gatehouse_v1_BodyChunk, BodyChunk__Output as _gatehouse_v1_BodyChunk__Output } from '../../gatehouse/v1/BodyChunk.js';
import type { ResponseHead as _gatehouse_v1_ResponseHead, ResponseHead__Output as _gatehouse_v1_ResponseHead__Output } from '../../gatehouse/v1/ResponseHead.js';
import type { ServerSentEvent as _gatehouse_v1_ServerSentEvent, ServerSentEvent__Output as _gatehouse_v1_ServerSentEvent__Output } from '../../gatehouse/v1/ServerSentEvent.js';
import type { ExchangeEnd as _gatehouse_v1_ExchangeEnd, ExchangeEnd__Output as _gatehouse_v1_ExchangeEnd__Output } from '../../gatehouse/v1/ExchangeEnd.js';
import type { PolicyDecision as _gatehouse_v1_PolicyDecision, PolicyDecision__Output as _gatehouse_v1_PolicyDecision__Output } from '../../gatehouse/v1/PolicyDecision.js';
import type { Long } from '@grpc/proto-loader';

export interface SessionEvent {
  'id'?: (string);
  'sessionId'?: (string);
  'exchangeId'?: (string);
  'timeUnixMicros'?: (number | string | Long);
  'requestHead'?: (_gatehouse_v1_RequestHead | null);
  'requestBody'?: (_gatehouse_v1_BodyChunk | null);
  'responseHead'?: (_gatehouse_v1_ResponseHead | null);
  'responseBody'?: (_gatehouse_v1_BodyChunk | null);
  'sse'?: (_gatehouse_v1_ServerSentEvent | null);
  'exchangeEnd'?: (_gatehouse_v1_ExchangeEnd | null);
  'decision'?: (_gatehouse_v1_PolicyDecision | null);
  'payload'?: "requestHead"|"requestBody"|"responseHead"|"responseBody"|"sse"|"exchangeEnd"|"decision";
}

export interface SessionEvent__Output {
  'id': (string);
  'sessionId': (string);
  'exchangeId': (string);
  'timeUnixMicros': (number);
  'requestHead'?: (_gatehouse_v1_RequestHead__Output | null);
  'requestBody'?: (_gatehouse_v1_BodyChunk__Output | null);
  'responseHead'?: (_gatehouse_v1_ResponseHead__Output | null);
  'responseBody'?: (_gatehouse_v1_BodyChunk__Output | null);
  'sse'?: (_gatehouse_v1_ServerSentEvent__Output | null);
  'exchangeEnd'?: (_gatehouse_v1_ExchangeEnd__Output | null);
  'decision'?: (_gatehouse_v1_PolicyDecision__Output | null);
  'payload'?: "requestHead"|"requestBody"|"responseHead"|"responseBody"|"sse"|"exchangeEnd"|"decision";
}
