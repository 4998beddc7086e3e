// A guest's posted password goes to the registry's create-only key after the guest got its answer
// from the local store. While etcd is unreachable (or the write loses a race) it is tried again,
// 250 ms doubling up to 30 s, until it is published, the registry already holds one (the registry's
// wins: it reaches this host through the watch), the VM left the registry, or the operator cleared
// it here (`cancel`). A VM that leaves this host meanwhile (migrated) keeps it: the password moves
// with the VM through the registry. While a password waits here, the sync keeps it although the
// registry does not hold it (`isPending`). The value is never logged.
import { isImdsError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';

export interface PasswordPublisherOptions {
  /** The create-only write (RegistryWriter.setPassword without replace). */
  publish(vmId: string, value: string): Promise<unknown>;
  log: Logger;
  retryMs?: { first: number; max: number };
}

interface Pending {
  value: string;
  delay: number;
  attempts: number;
  timer: NodeJS.Timeout | undefined;
}

export class PasswordPublisher {
  private readonly o: PasswordPublisherOptions;
  private readonly pending = new Map<string, Pending>();
  private closed = false;

  constructor(options: PasswordPublisherOptions) {
    this.o = options;
  }

  /** A guest posted `value` (stored locally): publish it, retrying until one of the ends above. */
  post(vmId: string, value: string): void {
    if (this.closed) return;
    const before = this.pending.get(vmId);
    if (before !== undefined) clearTimeout(before.timer);
    const entry: Pending = { value, delay: this.o.retryMs?.first ?? 250, attempts: 0, timer: undefined };
    this.pending.set(vmId, entry);
    void this.attempt(vmId, entry);
  }

  /** The operator cleared the VM's password: one waiting here is not published. True if one was waiting. */
  cancel(vmId: string): boolean {
    const entry = this.pending.get(vmId);
    if (entry === undefined) return false;
    clearTimeout(entry.timer);
    this.pending.delete(vmId);
    this.o.log.info({ vm: vmId }, 'a posted password waiting for the registry was cleared: not published');
    return true;
  }

  /** A password posted here and not yet in the registry. */
  isPending(vmId: string): boolean {
    return this.pending.has(vmId);
  }

  get size(): number {
    return this.pending.size;
  }

  close(): void {
    this.closed = true;
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
  }

  private done(vmId: string, entry: Pending): void {
    if (this.pending.get(vmId) === entry) this.pending.delete(vmId);
  }

  private async attempt(vmId: string, entry: Pending): Promise<void> {
    if (this.closed || this.pending.get(vmId) !== entry) return;
    entry.attempts++;
    try {
      await this.o.publish(vmId, entry.value);
      this.done(vmId, entry);
      if (entry.attempts > 1) this.o.log.info({ vm: vmId, attempts: entry.attempts }, "a guest's password was published to the registry");
    } catch (err) {
      const code = isImdsError(err) ? err.code : undefined;
      if (code === 'ALREADY_EXISTS' || code === 'NOT_FOUND') {
        this.done(vmId, entry);
        this.o.log.warn(
          { vm: vmId, code },
          code === 'NOT_FOUND'
            ? "a guest's password was not published: its VM is no longer in the registry"
            : "a guest's password was not published: the registry holds one already, which wins",
        );
        return;
      }
      if (this.closed || this.pending.get(vmId) !== entry) return;
      if (entry.attempts === 1)
        this.o.log.warn({ vm: vmId, err: messageOf(err) }, "a guest's password is not in the registry yet: retrying until it is");
      entry.timer = setTimeout(() => void this.attempt(vmId, entry), entry.delay);
      entry.timer.unref();
      entry.delay = Math.min(entry.delay * 2, this.o.retryMs?.max ?? 30_000);
    }
  }
}
