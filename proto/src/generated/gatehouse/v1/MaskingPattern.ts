// Original file: proto/gatehouse/v1/agent_link.proto


export interface MaskingPattern {
  'name'?: (string);
  'pattern'?: (string);
  'maxLength'?: (number);
}

export interface MaskingPattern__Output {
  'name': (string);
  'pattern': (string);
  'maxLength': (number);
}
