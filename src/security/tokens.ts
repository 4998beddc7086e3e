// EC2-style session tokens (IMDSv2), stateless: a token is its expiry plus an HMAC-SHA256 over
// (expiry, network, VM id) under a key kept in the state directory, so tokens survive a restart,
// are worth nothing to another VM or on another network, and all die when the key is rotated.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImdsError, messageOf } from '../errors.ts';
import { writeFileAtomic } from '../util/atomic-write.ts';

export const TOKEN_TTL_MIN = 1;
export const TOKEN_TTL_MAX = 21_600;
const KEY_BYTES = 32;
const VERSION = 1;
/** version (1) + expiry, seconds since the epoch (4) + MAC (32). */
const TOKEN_BYTES = 1 + 4 + 32;

export type TokenCheck = 'valid' | 'invalid' | 'expired';

export function tokenKeyPath(stateDir: string): string {
  return join(stateDir, 'token.key');
}

export class TokenKeys {
  private key: Buffer;
  private readonly path: string;

  private constructor(path: string, key: Buffer) {
    this.path = path;
    this.key = key;
  }

  /** The key in `stateDir` (created, 32 random bytes, mode 0600, when there is none). */
  static load(stateDir: string): TokenKeys {
    const path = tokenKeyPath(stateDir);
    let key: Buffer;
    try {
      key = readFileSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new ImdsError('STORE_FAILED', `cannot read the token key ${path}: ${messageOf(err)}`, { cause: err });
      }
      key = randomBytes(KEY_BYTES);
      writeFileAtomic(path, key, 0o600);
    }
    if (key.length !== KEY_BYTES) {
      throw new ImdsError(
        'STORE_FAILED',
        `token key ${path} is ${key.length} bytes, not ${KEY_BYTES}: delete it to have a new one made (outstanding tokens die)`,
      );
    }
    return new TokenKeys(path, key);
  }

  /** For tests and tools: a key held in memory only. */
  static ephemeral(key: Buffer = randomBytes(KEY_BYTES)): TokenKeys {
    return new TokenKeys('', key);
  }

  /** A new key, persisted before use: every token issued so far becomes invalid. */
  rotate(): void {
    const key = randomBytes(KEY_BYTES);
    if (this.path !== '') writeFileAtomic(this.path, key, 0o600);
    this.key = key;
  }

  /** The key as it is (the registry shares it with the other hosts: a token stays valid after a migration). */
  current(): Buffer {
    return Buffer.from(this.key);
  }

  /** Takes a key given by the registry, persisted before use (nothing happens when it is the one in use). */
  adopt(key: Buffer): void {
    if (key.equals(this.key)) return;
    if (this.path !== '') writeFileAtomic(this.path, key, 0o600);
    this.key = Buffer.from(key);
  }

  issue(network: string, vmId: string, ttlSeconds: number, nowMs = Date.now()): string {
    // Whole seconds, rounded up: a token lives at least its TTL (at most a second more). Rounded
    // down, a 1 s token issued at x.995 s would be dead 5 ms later.
    const expiry = Math.ceil(nowMs / 1000) + ttlSeconds;
    const out = Buffer.alloc(TOKEN_BYTES);
    out.writeUInt8(VERSION, 0);
    out.writeUInt32BE(expiry, 1);
    this.mac(expiry, network, vmId).copy(out, 5);
    return out.toString('base64url');
  }

  check(token: string, network: string, vmId: string, nowMs = Date.now()): TokenCheck {
    if (token.length > 64) return 'invalid';
    const raw = Buffer.from(token, 'base64url');
    if (raw.length !== TOKEN_BYTES || raw.readUInt8(0) !== VERSION || raw.toString('base64url') !== token) return 'invalid';
    const expiry = raw.readUInt32BE(1);
    if (!timingSafeEqual(raw.subarray(5), this.mac(expiry, network, vmId))) return 'invalid';
    return expiry * 1000 <= nowMs ? 'expired' : 'valid';
  }

  private mac(expiry: number, network: string, vmId: string): Buffer {
    return createHmac('sha256', this.key).update(`${VERSION}\n${expiry}\n${network}\n${vmId.toLowerCase()}`).digest();
  }
}
