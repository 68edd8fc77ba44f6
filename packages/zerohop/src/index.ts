/**
 * zerohop: low-latency messaging for Node.js and TypeScript.
 *
 * One {@link Hub} API over every transport; the endpoint URL picks it. This version
 * ships shared memory (`shm://name`: zero-copy loans and borrows, fan-out to any
 * number of subscriber processes, futex wake-ups), batched UDP (`udp://host:port`),
 * QUIC (`quic://host:port`: TLS, reliable channels that survive reconnects, datagrams)
 * and the same reliable channels over TCP (`tcp://host:port`), Unix sockets
 * (`uds:///path`) and KCP on UDP (`kcp://host:port`).
 *
 * ```ts
 * import { Hub, struct } from 'zerohop'
 *
 * const Tick = struct({ seq: 'u64', price: 'f64', volume: 'u64' })
 * await using pub = await Hub.open('shm://market-data', { codec: Tick })
 * pub.publish({ seq: 1n, price: 50_000, volume: 100n })
 * ```
 */
export { Hub } from './hub.js'
export type {
  HubOptions,
  AutoHubOptions,
  CommonHubOptions,
  ShmHubOptions,
  UdpHubOptions,
  QuicHubOptions,
  TcpHubOptions,
  UdsHubOptions,
  KcpHubOptions,
  NatsHubOptions,
  HubRole,
  HubMetrics,
  RecvOptions,
  Loan,
  Borrowed,
  Received,
  MessageInfo,
  BackpressurePolicy,
  TransportName,
  UdpSocketMetrics,
  QuicMetrics,
  StreamMetrics,
  KcpMetrics,
  KcpGroupMetrics,
  NatsMetrics,
  NatsOptions,
  HubStatus,
  StatusEvent,
  TlsOptions,
  ReconnectOptions,
  PublishOptions,
  SendOptions,
  CloseOptions,
  WaterMarkEvent,
} from './hub.js'
export type { SegmentInfo, ListOptions } from './registry.js'
export type { ListenerInfo } from './listeners.js'
export type { Logger } from './logging.js'
export { diagnose, type Check } from './doctor.js'
export type { PromRegistry } from './prometheus.js'
export type { OtelMeter } from './otel.js'
export type { AutoOptions, AddressClass } from './transports/auto.js'
export type { Selection } from './port.js'
export { addressClass } from './transports/auto.js'
export type { ShmOptions } from './transports/shm.js'
export type { UdpOptions } from './transports/udp.js'
export type { QuicOptions } from './transports/quic.js'
export type { ConnectedPeer, ReliableOptions, ReliablePeer, StreamOptions, TcpOptions, WorkGroupMetrics } from './transports/stream.js'
export type { KcpMode, KcpOptions, KcpPeer } from './transports/kcp.js'
export type { ChaosDirectionMetrics, ChaosMetrics, ChaosOptions, FaultOptions } from './chaos.js'
export { Rpc, RpcServer, RpcClient } from './rpc.js'
export { Bridge } from './bridge.js'
export type { BridgeDirection, BridgeDirectionMetrics, BridgeMetrics, BridgeOptions } from './bridge.js'
export type { RpcOptions, RequestOptions, RequestContext, RpcHandler, RpcServerMetrics, RpcClientMetrics } from './rpc.js'
export { raw, json, msgpack } from './codec.js'
export type { Codec, CodecOption } from './codec.js'
export { struct, StructCodec } from './struct.js'
export type { FieldType, StructValue, StructView } from './struct.js'
export {
  ERROR_CODES,
  isRetryable,
  ZerohopError,
  BadUrlError,
  BadOptionError,
  UnsupportedTransportError,
  MessageTooLargeError,
  LayoutMismatchError,
  ClosedError,
  TimeoutError,
  BackpressureError,
  NoCapacityError,
  AbortedError,
  IoError,
  InvalidStateError,
  CodecError,
  TlsUntrustedError,
  TlsExpiredError,
  TlsNameMismatchError,
  TlsRefusedError,
  ConnectionLostError,
  ProtocolError,
  SlowConsumerError,
  RemoteError,
} from './errors.js'
export type { ErrorCode } from './errors.js'
export { parseEndpoint } from './endpoint.js'
export type { Endpoint } from './endpoint.js'
