// Original file: proto/gatehouse/v1/agent_link.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { AgentMessage as _gatehouse_v1_AgentMessage, AgentMessage__Output as _gatehouse_v1_AgentMessage__Output } from '../../gatehouse/v1/AgentMessage.js';
import type { ControlMessage as _gatehouse_v1_ControlMessage, ControlMessage__Output as _gatehouse_v1_ControlMessage__Output } from '../../gatehouse/v1/ControlMessage.js';

export interface AgentLinkClient extends grpc.Client {
  Connect(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_gatehouse_v1_AgentMessage, _gatehouse_v1_ControlMessage__Output>;
  Connect(options?: grpc.CallOptions): grpc.ClientDuplexStream<_gatehouse_v1_AgentMessage, _gatehouse_v1_ControlMessage__Output>;
  connect(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_gatehouse_v1_AgentMessage, _gatehouse_v1_ControlMessage__Output>;
  connect(options?: grpc.CallOptions): grpc.ClientDuplexStream<_gatehouse_v1_AgentMessage, _gatehouse_v1_ControlMessage__Output>;
  
}

export interface AgentLinkHandlers extends grpc.UntypedServiceImplementation {
  Connect: grpc.handleBidiStreamingCall<_gatehouse_v1_AgentMessage__Output, _gatehouse_v1_ControlMessage>;
  
}

export interface AgentLinkDefinition extends grpc.ServiceDefinition {
  Connect: MethodDefinition<_gatehouse_v1_AgentMessage, _gatehouse_v1_ControlMessage, _gatehouse_v1_AgentMessage__Output, _gatehouse_v1_ControlMessage__Output>
}
