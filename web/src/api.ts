// The JSON API client: every failure becomes an ApiError whose message can be
// shown to the person as it is.

export interface Money {
  amount: number;
  currency: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly body: unknown = null,
  ) {
    super(message);
  }
}

export interface Answer<T> {
  status: number;
  body: T;
}

export interface CallOptions {
  /** Sends an `Idempotency-Key`, so a retry never acts twice. */
  idempotencyKey?: string;
  /** A raw body (an image upload) instead of JSON. */
  raw?: Blob;
}

/** Calls the API and returns the status with the parsed body. */
export async function call<T>(
  method: string,
  path: string,
  body?: unknown,
  options: CallOptions = {},
): Promise<Answer<T>> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  let payload: BodyInit | undefined;
  if (options.raw) {
    payload = options.raw;
    headers['Content-Type'] = options.raw.type || 'application/octet-stream';
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  }
  if (options.idempotencyKey) headers['Idempotency-Key'] = options.idempotencyKey;
  let response: Response;
  try {
    response = await fetch(path, { method, headers, body: payload, credentials: 'same-origin' });
  } catch {
    throw new ApiError(0, 'network', 'Cannot reach Hawker. Check your connection and try again.');
  }
  const text = await response.text();
  let parsed: unknown = null;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = null;
    }
  }
  if (!response.ok) {
    const error = (parsed as { error?: { code?: string; message?: string } } | null)?.error;
    throw new ApiError(
      response.status,
      error?.code ?? 'http_' + response.status,
      error?.message ?? `The server answered ${response.status} ${response.statusText}.`,
      parsed,
    );
  }
  return { status: response.status, body: parsed as T };
}

export async function get<T>(path: string): Promise<T> {
  return (await call<T>('GET', path)).body;
}

export async function post<T>(path: string, body?: unknown, options?: CallOptions): Promise<T> {
  return (await call<T>('POST', path, body ?? {}, options)).body;
}

export async function patch<T>(path: string, body: unknown): Promise<T> {
  return (await call<T>('PATCH', path, body)).body;
}

export async function put<T>(path: string, body: unknown): Promise<T> {
  return (await call<T>('PUT', path, body)).body;
}

export async function del(path: string): Promise<void> {
  await call('DELETE', path);
}

/** A fresh key for one intended action (one tap on "Buy", one payment). */
export function newIdempotencyKey(): string {
  return crypto.randomUUID();
}

/** The message to show for anything thrown. */
export function describe(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}
