import type * as grpc from '@grpc/grpc-js';
import type { EnumTypeDefinition, MessageTypeDefinition } from '@grpc/proto-loader';

import type { Ack as _gatehouse_v1_Ack, Ack__Output as _gatehouse_v1_Ack__Output } from './gatehouse/v1/Ack.js';
import type { AgentConfig as _gatehouse_v1_AgentConfig, AgentConfig__Output as _gatehouse_v1_AgentConfig__Output } from './gatehouse/v1/AgentConfig.js';
import type { AgentLinkClient as _gatehouse_v1_AgentLinkClient, AgentLinkDefinition as _gatehouse_v1_AgentLinkDefinition } from './gatehouse/v1/AgentLink.js';
import type { AgentMessage as _gatehouse_v1_AgentMessage, AgentMessage__Output as _gatehouse_v1_AgentMessage__Output } from './gatehouse/v1/AgentMessage.js';
import type { ApprovalCancel as _gatehouse_v1_ApprovalCancel, ApprovalCancel__Output as _gatehouse_v1_ApprovalCancel__Output } from './gatehouse/v1/ApprovalCancel.js';
import type { ApprovalDecision as _gatehouse_v1_ApprovalDecision, ApprovalDecision__Output as _gatehouse_v1_ApprovalDecision__Output } from './gatehouse/v1/ApprovalDecision.js';
import type { ApprovalRequest as _gatehouse_v1_ApprovalRequest, ApprovalRequest__Output as _gatehouse_v1_ApprovalRequest__Output } from './gatehouse/v1/ApprovalRequest.js';
import type { BodyChunk as _gatehouse_v1_BodyChunk, BodyChunk__Output as _gatehouse_v1_BodyChunk__Output } from './gatehouse/v1/BodyChunk.js';
import type { Connection as _gatehouse_v1_Connection, Connection__Output as _gatehouse_v1_Connection__Output } from './gatehouse/v1/Connection.js';
import type { ControlMessage as _gatehouse_v1_ControlMessage, ControlMessage__Output as _gatehouse_v1_ControlMessage__Output } from './gatehouse/v1/ControlMessage.js';
import type { CredentialRef as _gatehouse_v1_CredentialRef, CredentialRef__Output as _gatehouse_v1_CredentialRef__Output } from './gatehouse/v1/CredentialRef.js';
import type { EventBatch as _gatehouse_v1_EventBatch, EventBatch__Output as _gatehouse_v1_EventBatch__Output } from './gatehouse/v1/EventBatch.js';
import type { ExchangeEnd as _gatehouse_v1_ExchangeEnd, ExchangeEnd__Output as _gatehouse_v1_ExchangeEnd__Output } from './gatehouse/v1/ExchangeEnd.js';
import type { Header as _gatehouse_v1_Header, Header__Output as _gatehouse_v1_Header__Output } from './gatehouse/v1/Header.js';
import type { Heartbeat as _gatehouse_v1_Heartbeat, Heartbeat__Output as _gatehouse_v1_Heartbeat__Output } from './gatehouse/v1/Heartbeat.js';
import type { Hello as _gatehouse_v1_Hello, Hello__Output as _gatehouse_v1_Hello__Output } from './gatehouse/v1/Hello.js';
import type { MaskingPattern as _gatehouse_v1_MaskingPattern, MaskingPattern__Output as _gatehouse_v1_MaskingPattern__Output } from './gatehouse/v1/MaskingPattern.js';
import type { Policy as _gatehouse_v1_Policy, Policy__Output as _gatehouse_v1_Policy__Output } from './gatehouse/v1/Policy.js';
import type { PolicyDecision as _gatehouse_v1_PolicyDecision, PolicyDecision__Output as _gatehouse_v1_PolicyDecision__Output } from './gatehouse/v1/PolicyDecision.js';
import type { PolicyMatch as _gatehouse_v1_PolicyMatch, PolicyMatch__Output as _gatehouse_v1_PolicyMatch__Output } from './gatehouse/v1/PolicyMatch.js';
import type { PolicyRule as _gatehouse_v1_PolicyRule, PolicyRule__Output as _gatehouse_v1_PolicyRule__Output } from './gatehouse/v1/PolicyRule.js';
import type { RequestHead as _gatehouse_v1_RequestHead, RequestHead__Output as _gatehouse_v1_RequestHead__Output } from './gatehouse/v1/RequestHead.js';
import type { ResponseHead as _gatehouse_v1_ResponseHead, ResponseHead__Output as _gatehouse_v1_ResponseHead__Output } from './gatehouse/v1/ResponseHead.js';
import type { Revocation as _gatehouse_v1_Revocation, Revocation__Output as _gatehouse_v1_Revocation__Output } from './gatehouse/v1/Revocation.js';
import type { RevokedSession as _gatehouse_v1_RevokedSession, RevokedSession__Output as _gatehouse_v1_RevokedSession__Output } from './gatehouse/v1/RevokedSession.js';
import type { ServerSentEvent as _gatehouse_v1_ServerSentEvent, ServerSentEvent__Output as _gatehouse_v1_ServerSentEvent__Output } from './gatehouse/v1/ServerSentEvent.js';
import type { SessionEvent as _gatehouse_v1_SessionEvent, SessionEvent__Output as _gatehouse_v1_SessionEvent__Output } from './gatehouse/v1/SessionEvent.js';
import type { VaultSecret as _gatehouse_v1_VaultSecret, VaultSecret__Output as _gatehouse_v1_VaultSecret__Output } from './gatehouse/v1/VaultSecret.js';
import type { VerificationKey as _gatehouse_v1_VerificationKey, VerificationKey__Output as _gatehouse_v1_VerificationKey__Output } from './gatehouse/v1/VerificationKey.js';
import type { Welcome as _gatehouse_v1_Welcome, Welcome__Output as _gatehouse_v1_Welcome__Output } from './gatehouse/v1/Welcome.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  gatehouse: {
    v1: {
      Ack: MessageTypeDefinition<_gatehouse_v1_Ack, _gatehouse_v1_Ack__Output>
      AgentConfig: MessageTypeDefinition<_gatehouse_v1_AgentConfig, _gatehouse_v1_AgentConfig__Output>
      AgentLink: SubtypeConstructor<typeof grpc.Client, _gatehouse_v1_AgentLinkClient> & { service: _gatehouse_v1_AgentLinkDefinition }
      AgentMessage: MessageTypeDefinition<_gatehouse_v1_AgentMessage, _gatehouse_v1_AgentMessage__Output>
      ApprovalCancel: MessageTypeDefinition<_gatehouse_v1_ApprovalCancel, _gatehouse_v1_ApprovalCancel__Output>
      ApprovalDecision: MessageTypeDefinition<_gatehouse_v1_ApprovalDecision, _gatehouse_v1_ApprovalDecision__Output>
      ApprovalRequest: MessageTypeDefinition<_gatehouse_v1_ApprovalRequest, _gatehouse_v1_ApprovalRequest__Output>
      BodyChunk: MessageTypeDefinition<_gatehouse_v1_BodyChunk, _gatehouse_v1_BodyChunk__Output>
      Connection: MessageTypeDefinition<_gatehouse_v1_Connection, _gatehouse_v1_Connection__Output>
      ControlMessage: MessageTypeDefinition<_gatehouse_v1_ControlMessage, _gatehouse_v1_ControlMessage__Output>
      CredentialRef: MessageTypeDefinition<_gatehouse_v1_CredentialRef, _gatehouse_v1_CredentialRef__Output>
      EventBatch: MessageTypeDefinition<_gatehouse_v1_EventBatch, _gatehouse_v1_EventBatch__Output>
      ExchangeEnd: MessageTypeDefinition<_gatehouse_v1_ExchangeEnd, _gatehouse_v1_ExchangeEnd__Output>
      Header: MessageTypeDefinition<_gatehouse_v1_Header, _gatehouse_v1_Header__Output>
      Heartbeat: MessageTypeDefinition<_gatehouse_v1_Heartbeat, _gatehouse_v1_Heartbeat__Output>
      Hello: MessageTypeDefinition<_gatehouse_v1_Hello, _gatehouse_v1_Hello__Output>
      MaskingPattern: MessageTypeDefinition<_gatehouse_v1_MaskingPattern, _gatehouse_v1_MaskingPattern__Output>
      Outcome: EnumTypeDefinition
      Policy: MessageTypeDefinition<_gatehouse_v1_Policy, _gatehouse_v1_Policy__Output>
      PolicyDecision: MessageTypeDefinition<_gatehouse_v1_PolicyDecision, _gatehouse_v1_PolicyDecision__Output>
      PolicyMatch: MessageTypeDefinition<_gatehouse_v1_PolicyMatch, _gatehouse_v1_PolicyMatch__Output>
      PolicyRule: MessageTypeDefinition<_gatehouse_v1_PolicyRule, _gatehouse_v1_PolicyRule__Output>
      RequestHead: MessageTypeDefinition<_gatehouse_v1_RequestHead, _gatehouse_v1_RequestHead__Output>
      ResponseHead: MessageTypeDefinition<_gatehouse_v1_ResponseHead, _gatehouse_v1_ResponseHead__Output>
      Revocation: MessageTypeDefinition<_gatehouse_v1_Revocation, _gatehouse_v1_Revocation__Output>
      RevokedSession: MessageTypeDefinition<_gatehouse_v1_RevokedSession, _gatehouse_v1_RevokedSession__Output>
      ServerSentEvent: MessageTypeDefinition<_gatehouse_v1_ServerSentEvent, _gatehouse_v1_ServerSentEvent__Output>
      SessionEvent: MessageTypeDefinition<_gatehouse_v1_SessionEvent, _gatehouse_v1_SessionEvent__Output>
      VaultSecret: MessageTypeDefinition<_gatehouse_v1_VaultSecret, _gatehouse_v1_VaultSecret__Output>
      VerificationKey: MessageTypeDefinition<_gatehouse_v1_VerificationKey, _gatehouse_v1_VerificationKey__Output>
      Welcome: MessageTypeDefinition<_gatehouse_v1_Welcome, _gatehouse_v1_Welcome__Output>
    }
  }
}

