// Per-VM contact across restarts: the contact book's counts (src/contact.ts) written to
// `<state_dir>/contacts.json` (a temporary file renamed over it) every `intervalMs` when they
// changed and when the daemon stops, and read back when the next one starts. Nothing on the request
// path: the book is updated there as before; only the periodic write is new (the native loop's
// counts are drained first).
//
// A hand-over (`imds restart`, an upgrade without systemd): the successor starts while the daemon
// it replaces still serves and writes its last counts when it stops. So the successor reads the file
// only once that daemon has exited (the pid file still names it), and adds the counts to its own:
// the two answered different requests, so nothing is counted twice. It writes nothing before.
//
// A missing file is a first start; an unreadable or malformed one is logged and ignored (the next
// write replaces it): the daemon never fails to start over it. VMs no longer in the inventory are
// dropped when it is read.
import { readFileSync } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContactRecord } from '../contact.ts';
import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { runningDaemon } from '../pidfile.ts';
import type { Stats } from '../stats.ts';

export const CONTACT_FILE = 'contacts.json';
const FORMAT = 1;

export interface ContactFileOptions {
  stateDir: string;
  stats: Stats;
  /** Whether a VM is still registered (records of others are dropped when read). */
  exists: (vmId: string) => boolean;
  log: Logger;
  /** How often the counts are written when they changed. */
  intervalMs?: number;
  /** The pid of a daemon this one replaces that has not exited yet (the pid file's, when it is not ours). */
  predecessor?: () => number | undefined;
}

/** What the file holds (one line of JSON). */
interface ContactDocument {
  format: number;
  written_at: string;
  /** [vm id, requests, first seen, last seen (ms since the epoch), last status] */
  vms: ContactRecord[];
}

function isRecord(r: unknown): r is ContactRecord {
  return (
    Array.isArray(r) &&
    r.length === 5 &&
    typeof r[0] === 'string' &&
    r.slice(1).every((n) => typeof n === 'number' && Number.isFinite(n) && n >= 0)
  );
}

/** The records of a file's text; throws with the reason when it is not one this format reads. */
export function parseContacts(text: string): ContactRecord[] {
  const doc = JSON.parse(text) as Partial<ContactDocument> | null;
  if (doc === null || typeof doc !== 'object' || doc.format !== FORMAT || !Array.isArray(doc.vms))
    throw new Error(`not a contact file of format ${FORMAT}`);
  const bad = doc.vms.findIndex((r) => !isRecord(r));
  if (bad >= 0) throw new Error(`vms[${bad}] is not [id, requests, first_seen, last_seen, last_status]`);
  return doc.vms;
}

export class ContactFile {
  readonly path: string;
  private readonly options: ContactFileOptions;
  private timer: NodeJS.Timeout | undefined;
  private loaded = false;
  private closed = false;
  private written = -1;

  constructor(options: ContactFileOptions) {
    this.options = options;
    this.path = join(options.stateDir, CONTACT_FILE);
  }

  /** Reads the file (at once, or once the daemon this one replaces has exited), then writes every interval. */
  start(): void {
    const { predecessor, stateDir } = this.options;
    const waitFor = predecessor === undefined ? runningDaemon(stateDir) : predecessor();
    if (waitFor === undefined) {
      this.load();
      return;
    }
    const poll = setInterval(() => {
      if (this.closed) clearInterval(poll);
      else if (!alive(waitFor)) {
        clearInterval(poll);
        this.load();
      }
    }, 100);
    poll.unref();
  }

  private writing: Promise<void> = Promise.resolve();

  /**
   * Writes the counts as they are now when they changed since the last write (only once the file
   * was read): off the event loop but for the serialisation (about 70 bytes a VM), one write at a time.
   */
  flush(): Promise<void> {
    this.writing = this.writing.then(() => this.write());
    return this.writing;
  }

  private async write(): Promise<void> {
    if (!this.loaded) return;
    const { stats, log } = this.options;
    const book = stats.collect().contacts;
    if (book.version === this.written) return;
    const version = book.version;
    const doc: ContactDocument = { format: FORMAT, written_at: new Date().toISOString(), vms: book.records() };
    const tmp = `${this.path}.tmp-${process.pid}`;
    try {
      const file = await open(tmp, 'w', 0o640);
      try {
        await file.writeFile(`${JSON.stringify(doc)}\n`);
        await file.sync();
      } finally {
        await file.close();
      }
      await rename(tmp, this.path);
      this.written = version;
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => undefined);
      log.warn({ file: this.path, err: messageOf(err) }, 'per-VM contact not written');
    }
  }

  /** The daemon stops: the last write (once guests are no longer answered). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await this.flush();
  }

  private load(): void {
    if (this.closed) return;
    const { stats, log, exists } = this.options;
    let text: string | undefined;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        log.warn({ file: this.path, err: messageOf(err) }, 'per-VM contact of the previous run not read; starting afresh');
    }
    if (text !== undefined) {
      try {
        const records = parseContacts(text);
        const taken = stats.contacts.restore(records, exists);
        log.info({ file: this.path, vms: taken, dropped: records.length - taken }, 'per-VM contact of the previous run read');
      } catch (err) {
        log.warn({ file: this.path, err: messageOf(err) }, 'per-VM contact of the previous run is malformed; starting afresh');
      }
    }
    this.loaded = true;
    this.timer = setInterval(() => void this.flush(), this.options.intervalMs ?? 15_000);
    this.timer.unref();
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
