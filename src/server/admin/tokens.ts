// /v1/token-key: the IMDSv2 token key (`imds token rotate-key`).
import { z } from 'zod';
import type { AdminPlugin } from './deps.ts';
import { errorResponses } from './schemas.ts';

/** Registered with the prefix /v1/token-key. */
export const tokenRoutes: AdminPlugin = (app, { deps }, done) => {
  app.post(
    '/rotate',
    {
      schema: {
        tags: ['daemon'],
        summary: 'Replace the IMDSv2 token key; tokens issued before are refused from now on',
        response: { 200: z.object({ rotated_at: z.string() }), ...errorResponses },
      },
    },
    () => {
      deps.rotateTokenKey();
      deps.log.info('token key rotated');
      return { rotated_at: new Date().toISOString() };
    },
  );
  done();
};
