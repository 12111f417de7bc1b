// Original file: proto/gatehouse/v1/agent_link.proto

import type { CredentialRef as _gatehouse_v1_CredentialRef, CredentialRef__Output as _gatehouse_v1_CredentialRef__Output } from '../../gatehouse/v1/CredentialRef.js';

export interface Connection {
  'name'?: (string);
  'type'?: (string);
  'upstream'?: (string);
  'credential'?: (_gatehouse_v1_CredentialRef | null);
}

export interface Connection__Output {
  'name': (string);
  'type': (string);
  'upstream': (string);
  'credential': (_gatehouse_v1_CredentialRef__Output | null);
}
