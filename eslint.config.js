// ESLint (typescript-eslint, type-aware) for the whole tree; Prettier formats (eslint-config-prettier
// turns off the rules that would fight it). Type-aware rules catch what matters in an event-driven
// daemon: promises nobody awaits or catches, async functions handed to event emitters, switches
// over step kinds that miss one.
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'native/build/', 'node_modules/', 'bench/.build/', 'bench/results/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: globals.node,
      parserOptions: { projectService: { allowDefaultProject: ['*.js', '*.mjs'] }, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite', 'before', 'after'] }],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
      '@typescript-eslint/only-throw-error': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'max-len': ['error', { code: 160, ignoreUrls: true }],
      'max-lines': ['error', { max: 350, skipBlankLines: true, skipComments: true }],
      'max-lines-per-function': ['error', { max: 80, skipBlankLines: true, skipComments: true, IIFEs: true }],
      'no-restricted-imports': [
        'error',
        {
          paths: [
            {
              name: 'node:child_process',
              message: 'processes start only in src/netns/run.ts (commands) and src/netns/service.ts (services)',
            },
          ],
        },
      ],
    },
  },
  {
    // The process runner, its spawner and the service starter are the only modules that start processes.
    files: ['src/netns/run.ts', 'src/netns/spawner.ts', 'src/netns/spawner-child.ts', 'src/netns/service.ts'],
    rules: { 'no-restricted-imports': 'off' },
  },
  {
    // Tests, benchmarks and scripts drive real processes and long scenarios.
    files: ['test/**', 'bench/**', 'scripts/**'],
    rules: { 'no-restricted-imports': 'off', 'max-lines-per-function': 'off', 'max-lines': 'off' },
  },
  {
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    files: ['**/*.cjs'],
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  prettier,
);
