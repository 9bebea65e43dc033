/**
 * The one way the extension talks to the server: Redspot's jupyter-server handlers
 * under `<base>/redspot/api/`, which ask the hub and Redspot's services with the
 * server's own token (no token ever reaches the browser).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** A refusal or failure, with the server's own message. */
export class RedspotError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

/**
 * Ask this server: Redspot's endpoints by default, or another API of the server (`root`,
 * e.g. jupyter-resource-usage's `api/metrics/v1`). The server's settings add the XSRF
 * token a request authenticated by the hub's cookie needs, even a GET.
 */
export async function requestAPI<T>(
  path: string,
  init: RequestInit = {},
  root = 'redspot/api'
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, root, path);
  if (init.body !== undefined && !(init.headers as any)?.['Content-Type']) {
    init = { ...init, headers: { ...(init.headers ?? {}), 'Content-Type': 'application/json' } };
  }
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new RedspotError(`the server did not answer: ${error}`, 0);
  }
  const text = await response.text();
  let data: any = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { message: text };
    }
  }
  if (!response.ok) {
    throw new RedspotError(data?.message || data?.reason || response.statusText, response.status);
  }
  return data as T;
}

/** An address of this server (e.g. the Ray dashboard's proxy), for a link. */
export function serverURL(path: string): string {
  return URLExt.join(ServerConnection.makeSettings().baseUrl, path);
}
