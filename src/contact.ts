// When each VM last reached the metadata service: first and last request, the last status and a
// count, whichever side answered (the native loop's counts arrive when drained). Read by the admin
// API (`imds vm show`) and the metrics scrape; kept in memory only (a restart starts afresh).

export interface Contact {
  requests: number;
  /** Milliseconds since the epoch. */
  firstSeen: number;
  lastSeen: number;
  lastStatus: number;
}

export class ContactBook {
  private readonly byVm = new Map<string, Contact>();

  /** One request of the VM answered now with `status`. */
  seen(vmId: string, status: number, now = Date.now()): void {
    const c = this.byVm.get(vmId);
    if (c === undefined) this.byVm.set(vmId, { requests: 1, firstSeen: now, lastSeen: now, lastStatus: status });
    else {
      c.requests++;
      if (now >= c.lastSeen) {
        c.lastSeen = now;
        c.lastStatus = status;
      }
    }
  }

  /** Requests counted elsewhere (the native loop) since the last merge. */
  merge(vmId: string, add: Contact): void {
    const c = this.byVm.get(vmId);
    if (c === undefined) {
      this.byVm.set(vmId, { ...add });
      return;
    }
    c.requests += add.requests;
    c.firstSeen = Math.min(c.firstSeen, add.firstSeen);
    if (add.lastSeen >= c.lastSeen) {
      c.lastSeen = add.lastSeen;
      c.lastStatus = add.lastStatus;
    }
  }

  get(vmId: string): Contact | undefined {
    return this.byVm.get(vmId);
  }

  /** The VM is gone: its record goes too. */
  forget(vmId: string): void {
    this.byVm.delete(vmId);
  }
}
