"""Numba kernels behind features/prompts.py: skeleton extraction, token canonicalisation, MinHash, LSH.

Input is a batch of *normalised* prompt texts as one Arrow string buffer (UTF-8 bytes + int64 offsets),
output one template id and a fixed set of LSH band keys per text. Every output depends on its own text
only (and on the constants of this module and of features/prompt_lexicon.py), never on the batch.

All hashing is our own (FNV-1a + splitmix64 finaliser over bytes), so ids are stable across processes,
Python hash seeds, Polars versions and machines.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import pyarrow as pa

from features.prompt_lexicon import CONCEPTS, STOP

# --- constants that define the ids (changing one changes every id) ---
SIGNATURE_SIZE = 32  # MinHash values per side
ID_ROWS = 4  # template_id = hash of the first ID_ROWS MinHash values of the chosen side
BAND_ROWS = 4  # LSH band keys: SIGNATURE_SIZE / BAND_ROWS bands per side
N_BANDS = SIGNATURE_SIZE // BAND_ROWS
SIDE_TOKENS = 48  # at most this many tokens of the first / last segment
MIN_TYPO_LEN = 4  # lexicon words at least this long are matched at edit distance 1

_MASK64 = 0xFFFFFFFFFFFFFFFF
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_STOP_MARK = 1  # value in the typo table for "a misspelt stop word"
_AMBIGUOUS = 0  # value in the typo table for "matches several concepts": not corrected

U64_MAX = np.uint64(_MASK64)
FNV_OFFSET = np.uint64(_FNV_OFFSET)
FNV_PRIME = np.uint64(_FNV_PRIME)


def _splitmix64_py(z: int) -> int:
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def token_hash_py(token: bytes, skip: int = -1) -> int:
    """Pure-Python twin of `_hash_bytes` (used to build the lexicon tables)."""
    h = _FNV_OFFSET
    for i, c in enumerate(token):
        if i != skip:
            h = ((h ^ c) * _FNV_PRIME) & _MASK64
    return _splitmix64_py(h)


def _seeds(n: int, start: int) -> np.ndarray:
    out, z = [], start
    for _ in range(n):
        z = (z + 0x9E3779B97F4A7C15) & _MASK64
        out.append(_splitmix64_py(z))
    return np.array(out, dtype=np.uint64)


MINHASH_SEEDS = _seeds(SIGNATURE_SIZE, 0xD157_111A_7E00_0001)
BAND_SALTS = _seeds(N_BANDS + 1, 0xD157_111A_7E00_0002)  # last one salts template_id


# --- lexicon tables ---
def _inflections(word: str) -> set[str]:
    out = {word, word + "s", word + "es", word + "ed", word + "d", word + "ing", word + "ly"}
    if word.endswith("e"):
        out.add(word[:-1] + "ing")
    if word.endswith("y"):
        out.update((word[:-1] + "ies", word[:-1] + "ied"))
    return out


def _build_tables() -> tuple[np.ndarray, ...]:
    stop = set(STOP.split())
    surface: dict[str, int] = {}
    for concept, words in CONCEPTS.items():
        cid = token_hash_py(("@" + concept).encode())
        for word in words.split():
            for form in sorted(_inflections(word)):
                if form not in stop:
                    surface.setdefault(form, cid)
    # Deletion neighbourhood (symmetric-delete spelling correction): a token one edit away from a
    # vocabulary word shares a one-letter deletion with it.
    deletions: dict[int, int] = {}
    for form, value in [*sorted(surface.items()), *((w, _STOP_MARK) for w in sorted(stop))]:
        b = form.encode()
        if len(b) < MIN_TYPO_LEN:
            continue
        for j in range(len(b)):
            k = token_hash_py(b, j)
            deletions[k] = value if deletions.get(k, value) == value else _AMBIGUOUS
    stop_h = np.unique(np.array([token_hash_py(w.encode()) for w in stop], dtype=np.uint64))
    lk = np.array([token_hash_py(f.encode()) for f in surface], dtype=np.uint64)
    lv = np.array(list(surface.values()), dtype=np.uint64)
    dk = np.array(list(deletions), dtype=np.uint64)
    dv = np.array(list(deletions.values()), dtype=np.uint64)
    o, o2 = np.argsort(lk), np.argsort(dk)
    return stop_h, lk[o], lv[o], dk[o2], dv[o2]


STOP_KEYS, LEX_KEYS, LEX_VALUES, TYPO_KEYS, TYPO_VALUES = _build_tables()

# One-probe prefilter over every table key: most tokens and deletion variants are in no table, and a
# bit test rejects them before any binary search (the spelling correction is the kernel's hot loop).
_FILTER_BITS = 1 << 22
KEY_FILTER = np.zeros(_FILTER_BITS // 64, dtype=np.uint64)
for _keys in (STOP_KEYS, LEX_KEYS, TYPO_KEYS):
    _slot = (_keys >> np.uint64(20)) & np.uint64(_FILTER_BITS - 1)
    np.bitwise_or.at(
        KEY_FILTER,
        (_slot >> np.uint64(6)).astype(np.int64),
        np.uint64(1) << (_slot & np.uint64(63)),
    )


# --- kernels ---
@nb.njit(inline="always", cache=True)
def _mix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@nb.njit(inline="always", cache=True)
def _is_token_byte(c):
    # a-z 0-9 _ < > (placeholders like <url>) and any non-ASCII byte (accented letters, CJK, ...)
    return (97 <= c <= 122) or (48 <= c <= 57) or c == 95 or c == 60 or c == 62 or c >= 128


@nb.njit(inline="always", cache=True)
def _is_segment_end(c):
    # newline : . ? ! ;
    return c == 10 or c == 58 or c == 46 or c == 63 or c == 33 or c == 59


@nb.njit(cache=True)
def _hash_bytes(buf, s, e, skip):
    h = FNV_OFFSET
    for k in range(s, e):
        if k != skip:
            h = (h ^ np.uint64(buf[k])) * FNV_PRIME
    return _mix64(h)


@nb.njit(inline="always", cache=True)
def _lookup(keys, values, x):
    i = np.searchsorted(keys, x)
    if i < keys.shape[0] and keys[i] == x:
        return values[i]
    return np.uint64(0)


@nb.njit(inline="always", cache=True)
def _member(keys, x):
    i = np.searchsorted(keys, x)
    return i < keys.shape[0] and keys[i] == x


@nb.njit(cache=True)
def _stem_end(buf, s, e):
    n = e - s
    if n >= 6 and buf[e - 3] == 105 and buf[e - 2] == 110 and buf[e - 1] == 103:  # -ing
        return e - 3
    if n >= 5 and buf[e - 2] == 101 and buf[e - 1] == 100:  # -ed
        return e - 2
    if n >= 5 and buf[e - 2] == 108 and buf[e - 1] == 121:  # -ly
        return e - 2
    if n >= 4 and buf[e - 1] == 115 and buf[e - 2] != 115:  # -s
        return e - 1
    return e


@nb.njit(inline="always", cache=True)
def _maybe_key(bits, x):
    slot = (x >> np.uint64(20)) & np.uint64((1 << 22) - 1)
    return (bits[slot >> np.uint64(6)] >> (slot & np.uint64(63))) & np.uint64(1) != 0


@nb.njit(cache=True)
def _classify(buf, s, e, stop_h, lk, lv, dk, dv, bits):
    """(class, id) of one token: class 0 content (id = stem hash), 1 stop, 2 vocabulary (id = concept)."""
    h = _hash_bytes(buf, s, e, -1)
    if not _maybe_key(bits, h):
        pass
    elif _member(stop_h, h):
        return 1, h
    c = _lookup(lk, lv, h) if _maybe_key(bits, h) else np.uint64(0)
    if c != 0:
        return 2, c
    n = e - s
    if n >= MIN_TYPO_LEN - 1 and _maybe_key(bits, h):
        c = _lookup(dk, dv, h)  # a vocabulary word with one letter dropped
        if c == 1:
            return 1, h
        if c != 0:
            return 2, c
    if n >= MIN_TYPO_LEN:
        for j in range(s, e):
            hj = _hash_bytes(buf, s, e, j)
            if not _maybe_key(bits, hj):
                continue
            c = _lookup(lk, lv, hj)  # one letter inserted
            if c != 0:
                return 2, c
            if _member(stop_h, hj):
                return 1, hj
            c = _lookup(dk, dv, hj)  # one letter substituted, or two swapped
            if c == 1:
                return 1, hj
            if c != 0:
                return 2, c
    return 0, _hash_bytes(buf, s, _stem_end(buf, s, e), -1)


@nb.njit(cache=True)
def _tokenize(data, a, b, tbuf, tstart, tend, tseg):
    """Word tokens of data[a:b] copied into tbuf (apostrophes dropped), with their segment index."""
    nt = 0
    pos = 0
    seg = 0
    seg_has = False
    in_tok = False
    for k in range(a, b):
        c = data[k]
        if c == 39:  # apostrophe: "let's" -> "lets"
            continue
        if _is_token_byte(c):
            if not in_tok:
                in_tok = True
                tstart[nt] = pos
            tbuf[pos] = c
            pos += 1
        else:
            if in_tok:
                tend[nt] = pos
                tseg[nt] = seg
                nt += 1
                seg_has = True
                in_tok = False
            if _is_segment_end(c) and seg_has:
                seg += 1
                seg_has = False
    if in_tok:
        tend[nt] = pos
        tseg[nt] = seg
        nt += 1
    return nt


@nb.njit(cache=True)
def _side_signature(sig, ids, cls, t0, t1, seeds):
    """MinHash of the set of token ids in [t0, t1) (stop words left out unless nothing else is there);
    returns the size class of that set (see _size_class)."""
    k = seeds.shape[0]
    members = np.empty(t1 - t0, np.uint64)
    n = 0
    for t in range(t0, t1):
        if cls[t] != 1:
            members[n] = ids[t]
            n += 1
    if n == 0:
        for t in range(t0, t1):
            members[n] = ids[t]
            n += 1
    members = np.unique(members[:n])
    for x in members:
        for j in range(k):
            v = _mix64(x ^ seeds[j])
            if v < sig[j]:
                sig[j] = v
    return _size_class(members.shape[0])


@nb.njit(inline="always", cache=True)
def _size_class(n):
    # 1, 2, 3, 4, 5-6, 7-9, 10-14, 15+ distinct tokens: typos replace a token (same class), so the class
    # costs little recall, but it keeps tiny skeletons ("give me" vs "reply with one word") apart.
    if n <= 4:
        return n
    if n <= 6:
        return 5
    if n <= 9:
        return 6
    if n <= 14:
        return 7
    return 8


@nb.njit(cache=True)
def _band_key(sig, start, rows, salt):
    h = salt
    for j in range(start, start + rows):
        h = _mix64(h ^ sig[j])
    return h


@nb.njit(parallel=True, cache=True)
def skeleton_hashes(data, offsets, stop_h, lk, lv, dk, dv, bits, seeds, salts, chosen_only):
    """Per text: (valid, template_id, band keys [head bands..., tail bands...], chosen side 0/1).

    With `chosen_only`, only the chosen (wrapper) side is MinHashed: the other side's band keys
    are left 0, and everything else is as without it.
    """
    n = offsets.shape[0] - 1
    k = seeds.shape[0]
    n_bands = k // BAND_ROWS
    valid = np.zeros(n, np.bool_)
    tid = np.zeros(n, np.uint64)
    keys = np.zeros((n, 2 * n_bands), np.uint64)
    side = np.zeros(n, np.int8)
    for i in nb.prange(n):
        a = offsets[i]
        b = offsets[i + 1]
        size = b - a
        if size == 0:
            continue
        tbuf = np.empty(size, np.uint8)
        tstart = np.empty(size, np.int64)
        tend = np.empty(size, np.int64)
        tseg = np.empty(size, np.int64)
        nt = _tokenize(data, a, b, tbuf, tstart, tend, tseg)
        if nt == 0:
            continue
        valid[i] = True
        # head side: first segment (capped); tail side: last segment (capped). Equal for one-segment texts.
        h1 = 0
        while h1 < nt and tseg[h1] == 0 and h1 < SIDE_TOKENS:
            h1 += 1
        last = tseg[nt - 1]
        t0 = nt
        while t0 > 0 and tseg[t0 - 1] == last and nt - t0 < SIDE_TOKENS:
            t0 -= 1
        ids = np.zeros(nt, np.uint64)
        cls = np.zeros(nt, np.int8)
        score_h = 0
        score_t = 0
        for t in range(nt):
            if t < h1 or t >= t0:
                c, x = _classify(tbuf, tstart[t], tend[t], stop_h, lk, lv, dk, dv, bits)
                cls[t] = c
                ids[t] = x
                d = 1 if c == 2 else (-1 if c == 0 else 0)
                if t < h1:
                    score_h += d
                if t >= t0:
                    score_t += d
        # The wrapper side is the more instruction-like one (vocabulary minus content words); ties -> head.
        tail_chosen = score_t > score_h
        sig_h = np.full(k, U64_MAX)
        sig_t = np.full(k, U64_MAX)
        size_h = 0
        size_t = 0
        if not chosen_only or not tail_chosen:
            size_h = _side_signature(sig_h, ids, cls, 0, h1, seeds)
            for j in range(n_bands):
                keys[i, j] = _band_key(sig_h, j * BAND_ROWS, BAND_ROWS, salts[j])
        if not chosen_only or tail_chosen:
            size_t = _side_signature(sig_t, ids, cls, t0, nt, seeds)
            for j in range(n_bands):
                keys[i, n_bands + j] = _band_key(sig_t, j * BAND_ROWS, BAND_ROWS, salts[j])
        if tail_chosen:
            side[i] = 1
            tid[i] = _band_key(sig_t, 0, ID_ROWS, salts[n_bands] ^ np.uint64(size_t))
        else:
            tid[i] = _band_key(sig_h, 0, ID_ROWS, salts[n_bands] ^ np.uint64(size_h))
    return valid, tid, keys, side


def string_buffers(arr: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes, int64 offsets) of an Arrow string array; nulls come out as empty strings."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    if arr.null_count:
        arr = arr.fill_null("")
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data, offsets


def hash_skeletons(arr: pa.Array | pa.ChunkedArray, *, chosen_only: bool = False) -> tuple[np.ndarray, ...]:
    """Run the kernel over normalised texts: (valid, template_id, band keys, chosen side).

    `chosen_only`: band keys of the chosen (wrapper) side only, the other side's are 0 (half the MinHash work).
    """
    data, offsets = string_buffers(arr)
    return skeleton_hashes(
        data,
        offsets,
        STOP_KEYS,
        LEX_KEYS,
        LEX_VALUES,
        TYPO_KEYS,
        TYPO_VALUES,
        KEY_FILTER,
        MINHASH_SEEDS,
        BAND_SALTS,
        chosen_only,
    )


# --- phrase shingles (features/prompts.py phrase_keys) ---
_SHINGLE_PAD = np.uint64(0x9E3779B97F4A7C15)


@nb.njit(inline="always", cache=True)
def _is_clause_end(c):
    # the clause delimiters of phrase_keys: newline . ! ? ; : ,
    return c == 10 or c == 46 or c == 33 or c == 63 or c == 59 or c == 58 or c == 44


@nb.njit(cache=True)
def _emit_clause(words, n, min_words, max_words, width, row, out_row, out_key, m):
    if n < min_words or n > max_words:
        return m
    n_shingles = max(n - width + 1, 1)
    for i in range(n_shingles):
        k = _SHINGLE_PAD
        for j in range(width):
            # a clause shorter than a shingle is one key, its missing words padded by position
            h = words[i + j] if i + j < n else np.uint64(j + 1)
            k = _mix64(k ^ h)
        out_row[m] = row
        out_key[m] = k
        m += 1
    return m


@nb.njit(cache=True)
def phrase_shingles(data, offsets, min_words, max_words, width):
    """(text index, key) of every word `width`-shingle of every clause of min..max words, in text order."""
    n_texts = offsets.size - 1
    cap = data.size // 2 + n_texts + 1
    out_row = np.empty(cap, dtype=np.int64)
    out_key = np.empty(cap, dtype=np.uint64)
    words = np.empty(max_words + 1, dtype=np.uint64)
    m = 0
    for t in range(n_texts):
        a, b = offsets[t], offsets[t + 1]
        n = 0
        s = -1
        for k in range(a, b + 1):
            c = data[k] if k < b else 10
            if c == 32 or _is_clause_end(c):
                if s >= 0:
                    if n <= max_words:
                        words[n] = _hash_bytes(data, s, k, -1)
                    n += 1
                    s = -1
                if c != 32:
                    m = _emit_clause(words, n, min_words, max_words, width, t, out_row, out_key, m)
                    n = 0
            elif s < 0:
                s = k
    return out_row[:m], out_key[:m]
