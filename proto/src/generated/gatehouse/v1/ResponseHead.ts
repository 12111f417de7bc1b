// Original file: proto/gatehouse/v1/agent_link.proto

import type { Header as _gatehouse_v1_Header, Header__Output as _gatehouse_v1_Header__Output } from '../../gatehouse/v1/Header.js';

export interface ResponseHead {
  'status'?: (number);
  'headers'?: (_gatehouse_v1_Header)[];
}

export interface ResponseHead__Output {
  'status': (number);
  'headers': (_gatehouse_v1_Header__Output)[];
}
