// What the guest listeners and the fast path in front of them share about a connection: the
// network it arrived on (a tag on the socket), and how a connection passes from one to the other.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/** The id of the network whose namespace a connection arrived in (identity is network + source). */
export const NETWORK = Symbol('imds.network');

export type TaggedSocket = Socket & { [NETWORK]?: string };

export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** Hands a connection, and the bytes read from it so far, to node:http. */
export type HandOver = (socket: Socket, pending: Buffer | undefined) => void;

/** Takes a new connection first; calls `handOver` for whatever it does not answer itself. */
export type ConnectionFront = (socket: TaggedSocket, handOver: HandOver) => void;
