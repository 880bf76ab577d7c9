// Text from files and servers on its way to a terminal: control characters escaped (an ESC from a data
// file must not drive the terminal) and passwords inside URLs masked (HF_ENDPOINT=https://user:pw@host).

/** user:password@ in a URL becomes user:***@. */
export function maskUrlCredentials(text: string): string {
  return text.replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^\s/:@]+):[^\s/@]*@/gi, "$1:***@");
}

/** Control characters other than newline and tab as \xNN (\u2028/\u2029 and lone DEL too). */
export function escapeControlCharacters(text: string): string {
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16)}`;
  });
}

/** Both, for any message that may carry file or server content. */
export function safeText(text: string): string {
  return escapeControlCharacters(maskUrlCredentials(text));
}
