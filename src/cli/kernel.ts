// Commands that act on the configuration and the kernel directly (no daemon): serve, check, plan,
// down. Their heavy modules are imported when the command runs, so the other commands start fast.
import type { Command } from '@commander-js/extra-typings';
import type { Config } from '../config.ts';
import { emit, withOutput } from './output.ts';

/** The packaged configuration file (packaging/, systemd/imds.service). */
export const DEFAULT_CONFIG = '/etc/imds/imds.yaml';
const CONFIG_HELP = `configuration file (YAML; default ${DEFAULT_CONFIG})`;

/** The configuration file of `-c`; its module is imported only when a command needs it. */
async function loadConfigOf(opts: { config: string }): Promise<Config> {
  const { loadConfig } = await import('../config.ts');
  return loadConfig(opts.config);
}

export function registerKernelCommands(program: Command): void {
  program
    .command('serve')
    .description('run the daemon: build every network and serve metadata (SIGHUP reloads, SIGTERM stops)')
    .requiredOption('-c, --config <file>', `configuration file (YAML; the unit passes ${DEFAULT_CONFIG})`)
    .action(async (opts) => {
      const { serve } = await import('../daemon/serve.ts');
      const daemon = await serve(opts.config);
      await daemon.done;
    });

  withOutput(
    program
      .command('check')
      .description('validate the configuration file and exit')
      .option('-c, --config <file>', CONFIG_HELP, DEFAULT_CONFIG),
  ).action(async (opts) => {
    const cfg = await loadConfigOf(opts);
    const result = { ok: true, file: cfg.path, networks: cfg.networks.length, vms: cfg.vms.length };
    emit(opts, result, (r) => `${r.file}: valid (${r.networks} networks, ${r.vms} VMs)`);
  });

  withOutput(
    program
      .command('plan')
      .description("print what the daemon would change in the kernel for its networks (the file's and the store's), changing nothing")
      .option('-c, --config <file>', CONFIG_HELP, DEFAULT_CONFIG),
  ).action(async (opts) => {
    const { createRunner } = await import('../netns/run.ts');
    const { desiredState } = await import('../controller/desired.ts');
    const { observe } = await import('../controller/observe.ts');
    const { formatPlan, isEmpty, plan } = await import('../controller/plan.ts');
    const { readStoredNetworks, servedNetworks } = await import('./plan-networks.ts');
    const cfg = await loadConfigOf(opts);
    const runner = createRunner();
    const networks = servedNetworks(await readStoredNetworks(cfg.state_dir), cfg.networks, cfg.seed_mode);
    const desired = desiredState({ namespacePrefix: cfg.namespace_prefix, listenPort: cfg.listen_port, networks });
    const observed = await observe(runner, {
      namespacePrefix: cfg.namespace_prefix,
      lookInto: [...desired.networks.values()].map((d) => d.netns),
    });
    const p = plan(desired, observed);
    emit(opts, p, (q) => (isEmpty(q) ? 'nothing to change' : formatPlan(q)));
  });

  withOutput(
    program
      .command('down')
      .description('remove every namespace, veth, bridge and nft table imds created (the daemon must be stopped)')
      .option('-c, --config <file>', CONFIG_HELP, DEFAULT_CONFIG)
      .option('--purge-state', 'also delete state_dir (the store: networks, VMs, passwords)'),
  ).action(async (opts) => {
    const { runningDaemon } = await import('../pidfile.ts');
    const { ImdsError } = await import('../errors.ts');
    const { createLogger } = await import('../log.ts');
    const { teardown } = await import('../controller/teardown.ts');
    const { createRunner } = await import('../netns/run.ts');
    const cfg = await loadConfigOf(opts);
    const pid = runningDaemon(cfg.state_dir);
    if (pid !== undefined) {
      throw new ImdsError('DAEMON_RUNNING', `the daemon (pid ${pid}) is running; stop it first (systemctl stop imds)`, {
        details: { pid },
      });
    }
    const log = createLogger({ level: 'warn', destination: process.stderr });
    const result = await teardown(createRunner(), { namespacePrefix: cfg.namespace_prefix, dhcpDir: cfg.dhcp_dir }, log);
    if (opts.purgeState) {
      const { rmSync } = await import('node:fs');
      rmSync(cfg.state_dir, { recursive: true, force: true });
    }
    emit(opts, { ...result, purged: opts.purgeState === true }, (r) => {
      const removed = [...r.removed, ...r.tables.map((t) => `bridge table ${t}`)];
      const stopped = r.stopped.length > 0 ? `stopped dnsmasq: pid ${r.stopped.join(', ')}\n` : '';
      return `${stopped}${removed.length === 0 ? 'nothing to remove' : `removed: ${removed.join(', ')}`}`;
    });
  });
}
