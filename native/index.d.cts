/** Opens an IPv4 TCP listening socket inside the network namespace pinned at nsPath; returns its fd. */
export function listenInNetns(nsPath: string, ip: string, port: number, backlog: number, reusePort: boolean): number;
/** Sets IP_TTL on a socket. */
export function setIpTtl(fd: number, ttl: number): void;
/** Creates an unconnected IPv4 TCP socket inside the namespace pinned at nsPath; returns its fd. */
export function socketInNetns(nsPath: string): number;
/** Moves the calling thread into the namespace; returns an fd for restoreNetns. */
export function enterNetns(nsPath: string): number;
/** Moves the calling thread back (aborts the process if it cannot). */
export function restoreNetns(savedFd: number): void;
/** Creates a network namespace pinned at dir/name, as `ip netns add` does. */
export function createNetns(dir: string, name: string): void;
/** Sets NETLINK_NO_ENOBUFS and a receive buffer of rcvbuf bytes on this process's netlink socket bound to port; false if none is. */
export function tuneNetlink(port: number, rcvbuf: number): boolean;
/** sd_notify(3) from this process: `state` to $NOTIFY_SOCKET, with `fds` attached (SCM_RIGHTS); false when $NOTIFY_SOCKET is unset. */
export function sdNotify(state: string, fds?: number[]): boolean;
/** What an fd is: a listening TCP (IPv4) socket or not, its local port, its network namespace's inode (0 when unknown). */
export function socketInfo(fd: number): { listening: boolean; tcp: boolean; port: number; netnsInode: number };
/** Marks an fd close-on-exec. */
export function setCloexec(fd: number): void;
/** What the guest request reader (http_head.c) makes of a read: wait for more, hand over to node:http, or a head for the fast path. */
export function parseHttpHead(
  buf: Buffer,
):
  | { status: 'incomplete' | 'handover' }
  | { status: 'ok'; method: 'GET' | 'HEAD'; target: string; keepAlive: boolean; token?: string; headLength: number };
/** Native data plane (dp_napi.c; src/server/native-plane.ts wraps it). */
export function dpStart(
  options: { headersTimeoutMs: number; keepAliveTimeoutMs: number; requestTimeoutMs: number },
  onHandover: (slot: number, fd: number, bytes: Buffer) => void,
): void;
export function dpListen(slot: number, fd: number): void;
/** false when the slot had no listener. drain: connections owed an answer get it (then close); the others close now. */
export function dpUnlisten(slot: number, closeFd: boolean, drain: boolean): boolean;
export function dpStop(): void;
export function dpRateLimit(perSecond: number, burst: number, maxBuckets: number): void;
/** 0 when allowed, else the seconds until a request is (>= 1). */
export function dpRateTake(slot: number, ip: number): number;
/** A caller's bucket without taking from it: tokens left (refilled to now) and requests refused; undefined without one. */
export function dpRatePeek(slot: number, ip: number): { tokens: number; refused: number } | undefined;
export type DpBlob = { readonly __dpBlob: unique symbol };
export function dpBlob(bytes: Buffer): DpBlob;
export function dpRoute(key: string): number;
export type DpResponse = [status: number, type: number, seedAt: number, ...segments: (Buffer | DpBlob)[]];
/** A response many VMs give alike: its id (routes name it as 0x8000 | id); -1 when no more can be kept. */
export function dpSharedResponse(status: number, type: number, blob: DpBlob): number;
export function dpSetVm(slot: number, ip: number, key: number, flags: number, responses: DpResponse[], routes: Uint32Array): void;
export function dpRemoveVm(slot: number, ip: number): void;
export function dpSetGlobal(responses: DpResponse[]): void;
export function dpDrain(): { nets: number[]; vms: number[]; handovers: number };
export function dpInfo(): { running: boolean; connections: number; vms: number; routes: number; buckets: number; tableBytes: number };
/** 0: off; 1: answers to callers that are no VM only; 2: every answer. */
export function dpLogRequests(mode: 0 | 1 | 2): void;
export function dpDrainLog(): {
  /** key -1: no VM; bytes: the body's, as written (0 for HEAD); at: wall clock (ms since the epoch). */
  records: {
    slot: number;
    ip: number;
    key: number;
    method: 'GET' | 'HEAD';
    status: number;
    path: string;
    ms: number;
    bytes: number;
    at: number;
  }[];
  dropped: number;
};
/** The native data plane's route key for a request target (http_head.c imds_route_key); undefined when it hands the request over. */
export function routeKey(target: string): string | undefined;
/** malloc_trim(0): the C heap's free memory back to the system, after a big table change. */
export function mallocTrim(): void;
