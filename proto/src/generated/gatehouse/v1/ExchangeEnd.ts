// Original file: proto/gatehouse/v1/agent_link.proto

import type { Outcome as _gatehouse_v1_Outcome, Outcome__Output as _gatehouse_v1_Outcome__Output } from '../../gatehouse/v1/Outcome.js';
import type { Long } from '@grpc/proto-loader';

export interface ExchangeEnd {
  'outcome'?: (_gatehouse_v1_Outcome);
  'status'?: (number);
  'errorCode'?: (string);
  'errorMessage'?: (string);
  'requestBytes'?: (number | string | Long);
  'responseBytes'?: (number | string | Long);
  'masked'?: ({[key: string]: number});
}

export interface ExchangeEnd__Output {
  'outcome': (_gatehouse_v1_Outcome__Output);
  'status': (number);
  'errorCode': (string);
  'errorMessage': (string);
  'requestBytes': (number);
  'responseBytes': (number);
  'masked': ({[key: string]: number});
}
