/**
 * Custom masking patterns as the control plane accepts them and agents apply
 * them (`AgentConfig.masking_patterns`): both sides check the same rules.
 */
export const MASKING_PATTERN = {
  /** Names appear in markers (`[MASKED:internal-host]`) and in masking counts. */
  name: /^[a-z0-9][a-z0-9-]{0,63}$/,
  /** The longest text one match may span; it bounds what a stream holds back. */
  maxLength: 4096,
} as const;
