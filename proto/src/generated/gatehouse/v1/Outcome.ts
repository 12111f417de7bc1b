// Original file: proto/gatehouse/v1/agent_link.proto

export const Outcome = {
  OUTCOME_UNSPECIFIED: 'OUTCOME_UNSPECIFIED',
  OUTCOME_COMPLETED: 'OUTCOME_COMPLETED',
  OUTCOME_CANCELLED: 'OUTCOME_CANCELLED',
  OUTCOME_FAILED: 'OUTCOME_FAILED',
  OUTCOME_REFUSED: 'OUTCOME_REFUSED',
} as const;

export type Outcome =
  | 'OUTCOME_UNSPECIFIED'
  | 0
  | 'OUTCOME_COMPLETED'
  | 1
  | 'OUTCOME_CANCELLED'
  | 2
  | 'OUTCOME_FAILED'
  | 3
  | 'OUTCOME_REFUSED'
  | 4

export type Outcome__Output = typeof Outcome[keyof typeof Outcome]
