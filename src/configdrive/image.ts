// Builds a config drive image from its files with Debian's tools, driven as processes: ISO 9660 with
// Rock Ridge and Joliet (genisoimage, Nova's options) or a 64 MiB vfat filesystem (mkfs.vfat, then
// mtools' mcopy: no mounting). Label `config-2` either way. Works in a private temporary directory
// that is removed whatever happens.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ImdsError, isImdsError } from '../errors.ts';
import type { Runner } from '../netns/run.ts';
import type { DriveFile } from './tree.ts';

export const DRIVE_FORMATS = ['iso', 'vfat'] as const;
export type DriveFormat = (typeof DRIVE_FORMATS)[number];
export const DRIVE_LABEL = 'config-2';
/** Nova's vfat size. */
export const VFAT_KIB = 64 * 1024;

/** The program each step needs and the Debian package that has it. */
const PACKAGE_OF: Record<string, string> = { genisoimage: 'genisoimage', 'mkfs.vfat': 'dosfstools', mcopy: 'mtools' };

async function run(runner: Runner, argv: string[]): Promise<void> {
  try {
    await runner.run(argv, { timeoutMs: 60_000 });
  } catch (err) {
    const program = argv[0] as string;
    if (isImdsError(err, 'COMMAND_NOT_FOUND')) {
      throw new ImdsError(
        'COMMAND_NOT_FOUND',
        `${program} is not installed: install the Debian package ${PACKAGE_OF[program] ?? program} (apt-get install ${PACKAGE_OF[program] ?? program})`,
        {
          details: { program, package: PACKAGE_OF[program] ?? program },
          cause: err,
        },
      );
    }
    throw err;
  }
}

export async function buildConfigDrive(
  runner: Runner,
  files: readonly DriveFile[],
  format: DriveFormat,
  publisher = 'imds',
): Promise<Buffer> {
  const work = mkdtempSync(join(tmpdir(), 'imds-configdrive-'));
  try {
    const tree = join(work, 'tree');
    for (const f of files) {
      if (f.path.split('/').some((s) => s === '' || s === '.' || s === '..'))
        throw new ImdsError('INTERNAL', `bad config drive path ${f.path}`);
      const path = join(tree, ...f.path.split('/'));
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, f.body);
    }
    const image = join(work, `config.${format}`);
    if (format === 'iso') {
      await run(runner, [
        'genisoimage',
        '-o',
        image,
        '-ldots',
        '-allow-lowercase',
        '-allow-multidot',
        '-l',
        '-publisher',
        publisher,
        '-quiet',
        '-J',
        '-r',
        '-V',
        DRIVE_LABEL,
        tree,
      ]);
    } else {
      await run(runner, ['mkfs.vfat', '-C', '-n', DRIVE_LABEL, image, String(VFAT_KIB)]);
      await run(runner, ['mcopy', '-s', '-i', image, join(tree, 'openstack'), join(tree, 'ec2'), '::/']);
    }
    return readFileSync(image);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
