// SRM's reference edge: checks the CDN token of every request under a protected location.
//
// The token is what SRM's setup and keep-alive answers carry as `cdnToken`: an Akamai
// EdgeAuth (Token Auth 2.0) ACL token, `[ip=..~][st=..~]exp=..~acl=..[~id=..][~data=..]~hmac=..`,
// its hmac the HMAC (cdn.algorithm) with a hex key over the text before `~hmac=`. It comes
// as the query parameter, else the cookie, else the header named $srm_edge_token_name.
//
// Written for njs 0.7.9 (Debian bookworm): no timers, no shared dictionary. Everything that
// changes comes from nginx variables, which `srm edge` keeps current by writing files nginx
// includes, then reloading it:
//   $srm_edge_keys        the accepted hex keys, blank-separated (cdn.key, then cdn.keys)
//   $srm_edge_algorithm   sha256 | sha1 | md5
//   $srm_edge_token_name  __token__ by default
//   $srm_revoked          a map from $srm_token_id (a js_var set here) to the epoch second
//                         until which that session's tokens are refused, "" if not revoked
//
// srm.verdict (js_set $srm_edge_verdict) is "ok" or the reason of a refusal; the location
// answers 403 unless it is "ok" (srm-edge-check.conf).

var crypto = require('crypto');

// how far a token's st may lie ahead of this host's clock (SRM stamps it with Redis's)
var ST_LEEWAY = 5;
var FIELDS = { ip: 1, st: 1, exp: 1, acl: 1, id: 1, data: 1 };
var DIGEST_LENGTH = { sha256: 64, sha1: 40, md5: 32 };
var NUMBER = /^[0-9]{1,12}$/;
var HEX = /^[0-9a-f]+$/;

function tokenOf(r) {
    var name = r.variables.srm_edge_token_name || '__token__';
    var text = r.variables['arg_' + name] || r.variables['cookie_' + name] || r.headersIn[name];
    if (!text) {
        return '';
    }
    // a player that percent-encoded the whole token (its `~` and `=` too): decode it once;
    // a token as SRM gave it always has `~`, and its own %XX (in acl) must stay as they are
    if (text.indexOf('~') < 0 && text.indexOf('%') >= 0) {
        try {
            text = decodeURIComponent(text);
        } catch (e) {
            return text;
        }
    }
    return text;
}

function parse(text) {
    // hmac is last: what it signs is the text before it
    var at = text.lastIndexOf('~hmac=');
    if (at < 0) {
        return null;
    }
    var fields = { signed: text.slice(0, at), hmac: text.slice(at + 6) };
    var parts = fields.signed.split('~');
    for (var i = 0; i < parts.length; i++) {
        var eq = parts[i].indexOf('=');
        var name = parts[i].slice(0, eq);
        if (eq < 1 || FIELDS[name] !== 1 || fields[name] !== undefined) {
            return null;
        }
        fields[name] = parts[i].slice(eq + 1);
    }
    return fields;
}

function signedByAKey(r, fields) {
    var algorithm = r.variables.srm_edge_algorithm || 'sha256';
    var given = fields.hmac.toLowerCase();
    if (given.length !== DIGEST_LENGTH[algorithm] || !HEX.test(given)) {
        return false;
    }
    // the keys, blank-separated (split with a string: njs compiles a regex at every call);
    // one that is not hex would be an empty key, which anyone can sign with: left out
    var listed = (r.variables.srm_edge_keys || '').split(' ');
    var keys = [];
    for (var i = 0; i < listed.length; i++) {
        var key = Buffer.from(listed[i], 'hex');
        if (key.length > 0 && key.length * 2 === listed[i].length) {
            keys.push(key);
        }
    }
    if (keys.length === 0) {
        return false;
    }
    // Compared in constant time by comparing HMACs of both under a key the client does not
    // know (the first edge key): where === stops says nothing about the hmac given. (A loop
    // over the characters costs njs 0.7 about 20 microseconds, these two HMACs about 10.)
    // Every key is tried, whichever matches: the time says nothing about which one did.
    var expected = crypto.createHmac('sha256', keys[0]).update(given).digest('base64');
    var ok = false;
    for (var j = 0; j < keys.length; j++) {
        var mac = crypto.createHmac(algorithm, keys[j]).update(fields.signed).digest('hex');
        ok = crypto.createHmac('sha256', keys[0]).update(mac).digest('base64') === expected || ok;
    }
    return ok;
}

// Akamai's ACL: several patterns separated by `!`, each with `*` matching any run of
// characters (`/` included). SRM percent-encodes the values it fills in (their `*` and `!`
// too), so the literal parts are decoded and compared with the path nginx serves ($uri:
// decoded, `..` and `//` resolved), never with the raw request line.
function aclAllows(acl, path) {
    var patterns = acl.split('!');
    for (var i = 0; i < patterns.length; i++) {
        var pieces = patterns[i].split('*');
        try {
            pieces = pieces.map(decoded);
        } catch (e) {
            continue; // a malformed escape allows nothing
        }
        if (patterns[i].length > 0 && matches(pieces, path)) {
            return true;
        }
    }
    return false;
}

// decodeURIComponent costs njs 0.7 tens of microseconds even with nothing to decode
function decoded(text) {
    return text.indexOf('%') < 0 ? text : decodeURIComponent(text);
}

// whether path is pieces[0] * pieces[1] * ... * pieces[n-1] (each * any run of characters)
function matches(pieces, path) {
    var first = pieces[0];
    var last = pieces[pieces.length - 1];
    if (pieces.length === 1) {
        return path === first;
    }
    if (path.length < first.length + last.length || path.slice(0, first.length) !== first ||
        path.slice(path.length - last.length) !== last) {
        return false;
    }
    // the middle pieces, each at its first place after the previous one: the leftmost fit
    // leaves the most room for the rest, so no backtracking is needed
    var at = first.length;
    var end = path.length - last.length;
    for (var i = 1; i < pieces.length - 1; i++) {
        var found = path.indexOf(pieces[i], at);
        if (found < 0 || found + pieces[i].length > end) {
            return false;
        }
        at = found + pieces[i].length;
    }
    return true;
}

function check(r) {
    var text = tokenOf(r);
    if (!text) {
        return 'no token';
    }
    var fields = parse(text);
    if (fields === null || fields.hmac === undefined || fields.exp === undefined ||
        !NUMBER.test(fields.exp) || (fields.st !== undefined && !NUMBER.test(fields.st))) {
        return 'malformed token';
    }
    if (fields.acl === undefined) {
        return 'no acl';
    }
    if (!signedByAKey(r, fields)) {
        return 'bad hmac';
    }
    var now = Math.floor(Date.now() / 1000);
    if (Number(fields.exp) <= now) {
        return 'expired';
    }
    if (fields.st !== undefined && Number(fields.st) > now + ST_LEEWAY) {
        return 'not yet valid';
    }
    if (!aclAllows(fields.acl, r.uri)) {
        return 'path outside acl';
    }
    if (fields.ip !== undefined && fields.ip !== r.remoteAddress) {
        return 'other ip';
    }
    if (fields.id !== undefined) {
        r.variables.srm_token_id = fields.id;
        if (r.variables.srm_revoked) {
            return 'revoked';
        }
    }
    return 'ok';
}

function verdict(r) {
    try {
        return check(r);
    } catch (e) {
        r.error('srm edge: ' + e);
        return 'error';
    }
}

export default { verdict, aclAllows };
