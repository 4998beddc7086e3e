// When each VM last reached the metadata service: first and last request, the last status and a
// count, whichever side answered (the native loop's counts arrive when drained), and a small ring of
// its last requests. Read by the admin API (`imds vm show`), doctor and the metrics scrape. The
// counts (not the ring) outlive a restart: src/daemon/contact-file.ts writes them to the state
// directory and the next daemon (a restart, a hand-over, an upgrade) reads them back.

export interface Contact {
  requests: number;
  /** Milliseconds since the epoch. */
  firstSeen: number;
  lastSeen: number;
  lastStatus: number;
  /** The last few requests, when some were recorded (allocated at the first one). */
  recent?: RecentRing;
}

/** One entry of a VM's recent requests, as `imds vm show` and doctor print it. */
export interface RecentRequest {
  /** Milliseconds since the epoch (the last one, for a native summary). */
  at: number;
  status: number;
  /** Undefined for the native loop's summary: it records no paths. */
  method?: string;
  path?: string;
  /** Requests this entry stands for: 1, or what the native loop answered between two drains. */
  requests: number;
  /** Who answered: node (the JS fast path or the Fastify app) or native (the data plane's loop). */
  by: 'node' | 'native';
}

/** Entries kept per VM. */
export const RECENT_SIZE = 8;
/** Longer paths are kept cut to this many characters (a guest chooses its paths). */
export const RECENT_PATH_MAX = 160;

const METHODS = ['', 'GET', 'HEAD', 'PUT', 'POST', 'OTHER'] as const;
const NATIVE = 15;

/** Packing of an entry's second number: requests * CODE + status * 16 + method code (status < 1024). */
const CODE = 16 * 1024;

/**
 * A VM's last requests, small and flat: per entry its time and (packed) count, status and method in
 * a numbers array (unboxed doubles), its path in a strings array (shared strings). About 400 bytes of
 * heap a VM whose ring is full (measured: 10,000 VMs, 4 MB; the counts alone 130 bytes a VM); only VMs
 * that asked have one.
 */
export class RecentRing {
  private next = 0;
  private size = 0;
  /** Per entry: at, then requests * CODE + status * 16 + method code. Doubles from the start (no transition). */
  private readonly nums: number[] = new Array<number>(RECENT_SIZE * 2).fill(0.5);
  private readonly paths: (string | undefined)[] = new Array<string | undefined>(RECENT_SIZE).fill(undefined);

  push(at: number, status: number, method: number, requests: number, path: string | undefined): void {
    const i = this.next;
    this.nums[i * 2] = at;
    this.nums[i * 2 + 1] = requests * CODE + (status % 1024) * 16 + method;
    this.paths[i] = path;
    this.next = (i + 1) % RECENT_SIZE;
    if (this.size < RECENT_SIZE) this.size++;
  }

  /** Newest first. */
  entries(): RecentRequest[] {
    const out: RecentRequest[] = [];
    for (let k = 1; k <= this.size; k++) {
      const i = (this.next - k + RECENT_SIZE) % RECENT_SIZE;
      const packed = this.nums[i * 2 + 1] as number;
      const code = packed % 16;
      const e: RecentRequest = {
        at: this.nums[i * 2] as number,
        status: Math.floor(packed / 16) % 1024,
        requests: Math.floor(packed / CODE),
        by: code === NATIVE ? 'native' : 'node',
      };
      if (code !== NATIVE) e.method = METHODS[code] ?? 'OTHER';
      const path = this.paths[i];
      if (path !== undefined) e.path = path;
      out.push(e);
    }
    return out;
  }
}

function methodCode(method: string): number {
  const i = METHODS.indexOf(method as (typeof METHODS)[number]);
  return i > 0 ? i : METHODS.length - 1;
}

/**
 * Paths are shared: the few a guest asks are kept once (a bounded map), so that 10,000 VMs' rings
 * hold references, not copies, and no string sliced from a request's head keeps the head alive.
 */
const paths = new Map<string, string>();
const PATHS_MAX = 2048;

function keptPath(path: string): string {
  const known = paths.get(path);
  if (known !== undefined) return known;
  // A flat copy, cut: never a slice of the bytes the guest sent.
  const copy = Buffer.from(path.length > RECENT_PATH_MAX ? `${path.slice(0, RECENT_PATH_MAX)}…` : path, 'utf8').toString('utf8');
  if (paths.size < PATHS_MAX) paths.set(copy, copy);
  return copy;
}

/** What is persisted of one VM (the ring is not). */
export type ContactRecord = [vmId: string, requests: number, firstSeen: number, lastSeen: number, lastStatus: number];

export class ContactBook {
  private readonly byVm = new Map<string, Contact>();
  /** Bumped by every change: the persisted file is rewritten only when it moved. */
  version = 0;

  /** One request of the VM answered now with `status` (no method or path: not in the ring). */
  seen(vmId: string, status: number, now = Date.now()): Contact {
    this.version++;
    const c = this.byVm.get(vmId);
    if (c === undefined) {
      const fresh: Contact = { requests: 1, firstSeen: now, lastSeen: now, lastStatus: status };
      this.byVm.set(vmId, fresh);
      return fresh;
    }
    c.requests++;
    if (now >= c.lastSeen) {
      c.lastSeen = now;
      c.lastStatus = status;
    }
    return c;
  }

  /** One request answered by the JS side: counted, and kept in the VM's ring with its method and path (never a body or header). */
  answered(vmId: string, status: number, method: string, path: string, now = Date.now()): void {
    const c = this.seen(vmId, status, now);
    (c.recent ??= new RecentRing()).push(now, status, methodCode(method), 1, keptPath(path));
  }

  /** Requests counted elsewhere (the native loop) since the last merge: one summary entry in the ring. */
  merge(vmId: string, add: Omit<Contact, 'recent'>): void {
    this.version++;
    let c = this.byVm.get(vmId);
    if (c === undefined) {
      c = { requests: add.requests, firstSeen: add.firstSeen, lastSeen: add.lastSeen, lastStatus: add.lastStatus };
      this.byVm.set(vmId, c);
    } else {
      c.requests += add.requests;
      c.firstSeen = Math.min(c.firstSeen, add.firstSeen);
      if (add.lastSeen >= c.lastSeen) {
        c.lastSeen = add.lastSeen;
        c.lastStatus = add.lastStatus;
      }
    }
    (c.recent ??= new RecentRing()).push(add.lastSeen, add.lastStatus, NATIVE, add.requests, undefined);
  }

  get(vmId: string): Contact | undefined {
    return this.byVm.get(vmId);
  }

  /** The VM's last requests, newest first. */
  recent(vmId: string): RecentRequest[] {
    return this.byVm.get(vmId)?.recent?.entries() ?? [];
  }

  /** The VM is gone: its record goes too. */
  forget(vmId: string): void {
    if (this.byVm.delete(vmId)) this.version++;
  }

  get size(): number {
    return this.byVm.size;
  }

  /** What is persisted: every VM's counts. */
  records(): ContactRecord[] {
    const out: ContactRecord[] = [];
    for (const [id, c] of this.byVm) out.push([id, c.requests, c.firstSeen, c.lastSeen, c.lastStatus]);
    return out;
  }

  /**
   * Counts of an earlier run added in (a restart): to what this run has seen, so that nothing is
   * counted twice (the two runs answered different requests). Records of VMs `keep` refuses are
   * dropped; returns how many were taken.
   */
  restore(records: readonly ContactRecord[], keep: (vmId: string) => boolean): number {
    let taken = 0;
    for (const [id, requests, firstSeen, lastSeen, lastStatus] of records) {
      if (!keep(id)) continue;
      const c = this.byVm.get(id);
      if (c === undefined) this.byVm.set(id, { requests, firstSeen, lastSeen, lastStatus });
      else {
        c.requests += requests;
        c.firstSeen = Math.min(c.firstSeen, firstSeen);
        if (lastSeen > c.lastSeen) {
          c.lastSeen = lastSeen;
          c.lastStatus = lastStatus;
        }
      }
      taken++;
    }
    if (taken > 0) this.version++;
    return taken;
  }
}
