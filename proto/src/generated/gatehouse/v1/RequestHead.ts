// Original file: proto/gatehouse/v1/agent_link.proto

import type { Header as _gatehouse_v1_Header, Header__Output as _gatehouse_v1_Header__Output } from '../../gatehouse/v1/Header.js';

export interface RequestHead {
  'connection'?: (string);
  'method'?: (string);
  'path'?: (string);
  'headers'?: (_gatehouse_v1_Header)[];
  'kind'?: (string);
}

export interface RequestHead__Output {
  'connection': (string);
  'method': (string);
  'path': (string);
  'headers': (_gatehouse_v1_Header__Output)[];
  'kind': (string);
}
