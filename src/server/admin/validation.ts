// Validation failures as the admin API reports them: VALIDATION_FAILED with the first problem's
// field and the first problems listed (listProblems), whether zod found them in a route's schema
// (Fastify's validation) or in a model schema the route applies itself (parseModel).
import type { FastifySchemaValidationError } from 'fastify';
import type { z } from 'zod';
import { ImdsError, listProblems } from '../../errors.ts';
import { formatPath } from '../../model/validate.ts';

/** Parses `input` with a model schema; throws VALIDATION_FAILED naming the fields (under `prefix`). */
export function parseModel<T>(schema: z.ZodType<T>, input: unknown, prefix: (string | number)[] = []): T {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const field = formatPath([...prefix, ...(issue?.path ?? [])]);
  const all = listProblems(parsed.error.issues, (i) => `${formatPath([...prefix, ...i.path])}: ${i.message}`);
  throw new ImdsError('VALIDATION_FAILED', all.join('; '), { field });
}

/** `/vms/3/ip` (a JSON pointer from schema validation) -> `vms[3].ip`. */
function pointerPath(context: string | undefined, pointer: string): string {
  const parts: (string | number)[] = pointer
    .split('/')
    .filter(Boolean)
    .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
  if (context !== undefined && context !== 'body') parts.unshift(context);
  return formatPath(parts);
}

/** The body of a 400 for problems a route's schema found (in the body, params or querystring). */
export function schemaValidationBody(
  issues: readonly FastifySchemaValidationError[],
  context: string | undefined,
): { code: 'VALIDATION_FAILED'; message: string; field?: string } {
  const first = issues[0];
  const field = first === undefined ? undefined : pointerPath(context, first.instancePath);
  const lines = listProblems(issues, (v) => `${pointerPath(context, v.instancePath)}: ${v.message}`);
  return {
    code: 'VALIDATION_FAILED',
    message: lines.join('; '),
    ...(field === undefined || field === '(top level)' ? {} : { field }),
  };
}
