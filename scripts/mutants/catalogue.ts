// The mutants of scripts/mutants.sh: each is a deliberate bug (text replacements, each `find`
// occurring exactly once in its file) and the tests that must catch it. Keep `find` strings short
// and distinctive; when a restructure moves the code, move the mutant with it.

export interface Selection {
  /** Test files, relative to the repository. */
  files: string[];
  /** --test-name-pattern: only the tests (or suites) whose names match. */
  pattern?: string;
  /**
   * The data plane the daemons under test run (IMDS_TEST_DATA_PLANE); the default, `native`, answers
   * most guest requests in C, so a bug in Node's guest path needs `node` to be reachable at all.
   */
  plane?: 'native' | 'node';
}

export interface Mutant {
  name: string;
  /** The bug, as a reviewer would fear it. */
  fear: string;
  edits: { file: string; find: string; replace: string }[];
  tests: Selection;
}

const DATAPATH: Selection = { files: ['test/integration/datapath.test.ts'] };
/** The same tests with Node answering every guest request (data_plane: node). */
const DATAPATH_NODE: Selection = { ...DATAPATH, plane: 'node' };
const SECURITY: Selection = { files: ['test/integration/security.test.ts'], pattern: 'security: tokens' };

export const MUTANTS: Mutant[] = [
  {
    name: 'identity-ignores-network',
    fear: 'a caller is identified by its address alone, whatever network it arrived on',
    edits: [
      {
        file: 'src/store/metadata-index.ts',
        find: 'return this.networks.get(networkId)?.byIp.get(ip);',
        replace: 'return [...this.networks.values()].map((n) => n.byIp.get(ip)).find((e) => e !== undefined);',
      },
    ],
    // Node's lookup: the native loop identifies callers itself (native-identity-by-address below),
    // so only data_plane node reaches this code with a first request (it survived under native).
    tests: DATAPATH_NODE,
  },
  {
    name: 'other-vms-user-data',
    fear: "a VM is served another VM's user data",
    edits: [
      {
        file: 'src/store/metadata-index.ts',
        find: 'this.userData = facts.userData;',
        replace:
          'const g = globalThis as { lastUd?: Buffer }; this.userData = g.lastUd ?? facts.userData; ' +
          'if (facts.userData !== undefined) g.lastUd = facts.userData;',
      },
    ],
    tests: DATAPATH,
  },
  {
    name: 'guard-rule-dropped',
    fear: "the anti-spoofing rule is gone: a guest forging a neighbour's address gets its metadata",
    edits: [
      {
        file: 'src/netns/nft.ts',
        find: 'ether saddr . ip saddr != @${GUEST_SET} counter name "${SPOOF_COUNTER}" drop`',
        replace: 'ether saddr . ip saddr != @${GUEST_SET} counter name "${SPOOF_COUNTER}"`',
      },
    ],
    tests: SECURITY,
  },
  {
    name: 'tokens-required-ignored',
    fear: '`http_tokens: required` is ignored: the EC2 tree answers without a token',
    edits: [
      {
        file: 'src/server/guest-guard.ts',
        find: 'return vm.access.tokensRequired && isEc2Tree(path)',
        replace: 'return false && isEc2Tree(path)',
      },
    ],
    tests: SECURITY,
  },
  {
    name: 'rate-limit-off',
    fear: 'the per-guest rate limit never refuses: one guest can flood the service',
    edits: [
      {
        file: 'src/server/guest-guard.ts',
        find: 'const wait = guard.limiter?.take(network, source) ?? 0;',
        replace: 'const wait = 0;',
      },
      {
        file: 'src/server/native-plane.ts',
        find: 'this.addon.dpRateLimit(options.ratePerSecond, options.rateBurst, 100_000);',
        replace: 'this.addon.dpRateLimit(0, options.rateBurst, 100_000);',
      },
    ],
    tests: SECURITY,
  },
  {
    name: 'hop-limit-not-applied',
    fear: 'a token leaves with the default TTL: a container behind a NAT on the guest gets one',
    edits: [
      {
        file: 'src/server/guest-routes.ts',
        find: 'setSocketTtl(request.raw.socket as unknown as { _handle?: { fd?: number } }, vm.access.hopLimit);',
        replace: 'void setSocketTtl;',
      },
    ],
    tests: SECURITY,
  },
  {
    name: 'probe-header-trusted',
    fear: "identity from a header: the probe header is honoured without the daemon's secret",
    edits: [
      {
        file: 'src/server/guest-api.ts',
        find: 'if (secret.length !== PROBE_SECRET_BYTES.length || !timingSafeEqual(secret, PROBE_SECRET_BYTES)) return undefined;',
        replace: 'void timingSafeEqual;',
      },
    ],
    tests: SECURITY,
  },
  {
    name: 'listener-reachable-directly',
    fear: "a guest can reach the listener's port directly, around port 80's rules",
    edits: [
      {
        file: 'src/netns/nft.ts',
        find: 'rules: [`tcp dport ${port} ct status dnat accept`, `tcp dport ${port} counter drop`],',
        replace: 'rules: [`tcp dport ${port} accept`],',
      },
    ],
    tests: DATAPATH,
  },
  {
    name: 'no-idle-timeout',
    fear: 'a guest that connects and sends nothing holds its connection forever',
    edits: [
      { file: 'src/server/fast-path.ts', find: '    socket.setTimeout(deps.headersTimeoutMs);', replace: '    socket.setTimeout(0);' },
    ],
    // The native loop times such a connection out itself (native-no-idle-timeout below).
    tests: DATAPATH_NODE,
  },
  {
    name: 'no-header-timeout',
    fear: 'a guest that sends part of a request head and stalls holds its connection forever (slow loris)',
    edits: [
      {
        file: 'src/server/listeners.ts',
        find: 'requestTimeout: timeouts.requestTimeoutMs,\n      headersTimeout: timeouts.headersTimeoutMs,',
        replace: 'requestTimeout: 0,\n      headersTimeout: 0,',
      },
    ],
    tests: DATAPATH,
  },
  {
    name: 'teardown-leaves-bridge',
    fear: '`imds down` (and removing a network) leaves the bridge behind',
    edits: [
      {
        file: 'src/controller/plan.ts',
        find: 'const lines = [...e.veths.sort(), ...e.bridges.sort()].map',
        replace: 'const lines = [...e.veths.sort()].map',
      },
    ],
    tests: { files: ['test/integration/lifecycle.test.ts'] },
  },
  {
    name: 'password-accepted-twice',
    fear: 'the write-once password can be overwritten by a second POST',
    edits: [
      {
        file: 'src/store/inventory.ts',
        find:
          "    if ((this.passwords.get(vm.id) ?? '') !== '') return false;\n" +
          "    if (value === '') return true;\n    if (!this.store.setPasswordOnce(vm.id, value)) return false;",
        replace:
          "    if (value === '') return true;\n    this.store.clearPassword(vm.id);\n    if (!this.store.setPasswordOnce(vm.id, value)) return false;",
      },
    ],
    tests: { files: ['test/integration/nova-tree.test.ts'] },
  },
  {
    name: 'import-applied-half-way',
    fear: 'a rejected import leaves the records before the bad one applied (the CLI sends it in pieces)',
    edits: [
      {
        file: 'src/cli/vm.ts',
        find: "return client.call<ImportResult>('POST', path, body);",
        replace:
          'let r = {} as ImportResult;\n  for (let i = 0; i < Math.max(1, body.vms.length); i += 10) ' +
          "r = await client.call<ImportResult>('POST', path, { ...body, vms: body.vms.slice(i, i + 10) });\n  return r;",
      },
    ],
    tests: { files: ['test/integration/cli.test.ts'] },
  },
  {
    name: 'batch-without-transaction',
    fear: 'a crash half-way through a batch leaves half of it in the store',
    edits: [
      {
        file: 'src/store/sqlite-store.ts',
        find: 'const run = this.db.transaction((c: BatchChange) => {',
        replace: 'const run = ((c: BatchChange) => {',
      },
    ],
    tests: { files: ['test/integration/service.test.ts'], pattern: 'all or nothing' },
  },
  {
    name: 'vm-removal-not-live',
    fear: 'a removed VM is still served until the daemon restarts',
    edits: [
      {
        file: 'src/store/inventory.ts',
        find: '    this.forgetVm(vm.id);\n    this.currentIndex.removeVm(vm.id);',
        replace: '    this.forgetVm(vm.id);',
      },
    ],
    tests: { files: ['test/integration/cli.test.ts'] },
  },
  {
    name: 'drift-never-repaired',
    fear: 'kernel damage (a deleted veth, a flushed table) is noticed but never repaired',
    edits: [
      {
        file: 'src/controller/drift/scheduler.ts',
        find: '  add(cause: Cause): void {\n    if (this.stopped || this.paused) return;',
        replace: '  add(cause: Cause): void {\n    if (this.stopped || this.paused || cause.network !== "") return;',
      },
    ],
    tests: { files: ['test/integration/drift.test.ts'] },
  },
  {
    name: 'interception-not-updated',
    fear: 'a VM added to a running network is not steered to the service on the bridge (default-route guests get nothing)',
    edits: [
      {
        file: 'src/controller/network-services.ts',
        find: '        await this.syncGuests(d);\n        if (this.deps.network(network)?.dhcp === true)',
        replace: '        if (this.deps.network(network)?.dhcp === true)',
      },
    ],
    tests: { files: ['test/integration/dhcp.test.ts'] },
  },
  {
    name: 'reload-kills-daemon',
    fear: 'a reload (SIGHUP) ends the daemon: it has no handler once it is ready',
    edits: [
      {
        file: 'src/daemon/signals.ts',
        find: "    process.on('SIGHUP', this.onHup);\n",
        replace: "    process.off('SIGHUP', this.onHup);\n",
      },
    ],
    tests: { files: ['test/integration/lifecycle.test.ts'], pattern: 'SIGHUP' },
  },
  {
    name: 'empty-password-stored',
    fear: 'an empty password POST stores the empty value, and the real one the guest posts next is refused',
    edits: [
      {
        file: 'src/store/inventory.ts',
        find: "    if (value === '') return true;\n    if (!this.store.setPasswordOnce",
        replace: '    if (!this.store.setPasswordOnce',
      },
    ],
    tests: DATAPATH,
  },
  {
    name: 'other-methods-as-get',
    fear: "TRACE, PROPFIND and other unrouted methods are answered like a GET (the VM's documents)",
    edits: [
      {
        file: 'src/server/metadata-app.ts',
        find: "request.method === 'GET' || request.method === 'HEAD' ? replies.answer(request, reply) : otherMethod(request, reply),",
        replace: 'replies.answer(request, reply),',
      },
    ],
    tests: DATAPATH,
  },
  {
    name: 'connect-unanswered',
    fear: 'a CONNECT gets no answer: the connection is dropped without a word',
    edits: [
      {
        file: 'src/server/listeners.ts',
        find: "server.on('connect', (_req: IncomingMessage, socket: Socket) => {",
        replace: "server.on('connect-never', (_req: IncomingMessage, socket: Socket) => {",
      },
    ],
    tests: DATAPATH,
  },
  {
    name: 'head-limit-raised',
    fear: 'request heads far over 8 KiB are read and served (memory per connection unbounded by the documented limit)',
    edits: [{ file: 'src/server/listeners.ts', find: 'maxHeaderSize: 8192,', replace: 'maxHeaderSize: 65536,' }],
    tests: DATAPATH,
  },
  {
    name: 'admin-answers-before-kernel',
    fear: '`vm add` returns before the bridge steers the new VM: a default-route guest asking at once is not served',
    edits: [
      {
        file: 'src/server/admin-app.ts',
        find: "if (request.method !== 'GET' && request.method !== 'HEAD') await deps.vmChangesApplied?.();",
        replace: 'void request;',
      },
    ],
    tests: { files: ['test/integration/dhcp.test.ts'] },
  },
  {
    name: 'guest-request-kills-daemon',
    fear: 'a hostile guest request (a NUL in the path) ends the daemon',
    edits: [
      {
        file: 'src/server/guest-api.ts',
        find: '      segment = decodeURIComponent(raw);',
        replace: "      segment = decodeURIComponent(raw);\n      if (segment.includes('\\0')) process.abort();",
      },
    ],
    tests: { files: ['test/integration/security.test.ts'], pattern: 'hostile' },
  },
  // The native data plane (native/*.c, the default): the scratch copy's addon is rebuilt for these.
  {
    name: 'native-identity-by-address',
    fear: "the native loop keys VMs by address alone: a guest on one network is answered another network's VM",
    edits: [
      {
        file: 'native/dp_table.c',
        find: 'struct dp_vm *dp_vm_get(uint32_t slot, uint32_t ip) {\n  uint64_t key = (uint64_t)slot << 32 | ip;',
        replace: 'struct dp_vm *dp_vm_get(uint32_t slot, uint32_t ip) {\n  (void)slot;\n  uint64_t key = (uint64_t)1 << 32 | ip;',
      },
      {
        file: 'native/dp_table.c',
        find:
          'struct dp_vm *dp_vm_put(uint32_t slot, uint32_t ip, struct dp_vm *vm) {\n  struct dp_table *t = &dp_table;\n' +
          '  uint64_t key = (uint64_t)slot << 32 | ip;',
        replace:
          'struct dp_vm *dp_vm_put(uint32_t slot, uint32_t ip, struct dp_vm *vm) {\n  struct dp_table *t = &dp_table;\n  (void)slot;\n' +
          '  uint64_t key = (uint64_t)1 << 32 | ip;',
      },
    ],
    tests: DATAPATH,
  },
  {
    name: 'native-no-idle-timeout',
    fear: 'the native loop never times out a guest that connects and sends nothing: it holds the connection forever',
    edits: [
      { file: 'native/dp_loop.c', find: 'L.timers[T_FRESH].ms = opts->headers_timeout_ms;', replace: 'L.timers[T_FRESH].ms = 1 << 30;' },
    ],
    tests: DATAPATH,
  },
  {
    name: 'native-disabled-served',
    fear: 'the native loop serves a VM whose metadata endpoint is disabled (http_endpoint: disabled) its documents',
    edits: [
      {
        file: 'native/dp_loop.c',
        find: '} else if (vm != NULL && (vm->flags & DP_VM_DISABLED)) {',
        replace: '} else if (vm != NULL && (vm->flags & DP_VM_DISABLED) && false) {',
      },
    ],
    tests: { files: ['test/integration/security.test.ts'], pattern: 'disabled endpoint' },
  },
];
