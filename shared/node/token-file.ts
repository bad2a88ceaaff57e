import { type EnrollTokenFile, enrollTokenFileSchema, tokenProofKey } from '../trust/sign-enroll-request.js';
import { readJsonFile } from './json-file.js';

// An enrollment token file (what `outpost enroll token` wrote), checked whole: its proof key
// must match its secret. Errors name the file; callers add their flag.
export async function readTokenFile(path: string): Promise<EnrollTokenFile> {
  const file = await readJsonFile(
    path,
    enrollTokenFileSchema,
    'enrollment token',
    "an admin makes one with 'outpost enroll token'",
  );
  tokenProofKey(file, path);
  return file;
}
