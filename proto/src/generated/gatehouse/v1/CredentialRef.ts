// Original file: proto/gatehouse/v1/agent_link.proto

import type { VaultSecret as _gatehouse_v1_VaultSecret, VaultSecret__Output as _gatehouse_v1_VaultSecret__Output } from '../../gatehouse/v1/VaultSecret.js';

export interface CredentialRef {
  'env'?: (string);
  'scheme'?: (string);
  'username'?: (string);
  'vault'?: (_gatehouse_v1_VaultSecret | null);
  'source'?: "env"|"vault";
}

export interface CredentialRef__Output {
  'env'?: (string);
  'scheme': (string);
  'username': (string);
  'vault'?: (_gatehouse_v1_VaultSecret__Output | null);
  'source'?: "env"|"vault";
}
