<?php
// A stand-in Moodle MNet server for the moodle-edge tests, run as `php -S ADDR moodle.php`.
// It does what Moodle 4.5's mnet/xmlrpc/server.php does with a signed, unencrypted call from a
// trusted host: REMOTE_ADDR must be in MNET_TRUSTED (mnet_trusted_hosts, getremoteaddr() with
// the default getremoteaddrconf), the signature must verify against the peer's certificate
// (MNET_PEER_CERT), and the answer is signed with the site's key (MNET_SITE_KEY). Every call
// that reaches it is appended to MNET_LOG as one JSON line, so tests can prove that what the
// edge refused never arrived.
require __DIR__.'/lib.php';

$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if ($path !== '/mnet/xmlrpc/server.php') {
    header('Content-Type: text/plain');
    echo "ok\n";
    return true;
}
$raw = file_get_contents('php://input');
file_put_contents(getenv('MNET_LOG'), json_encode(array(
    'remote_addr' => $_SERVER['REMOTE_ADDR'],
    'x_forwarded_for' => $_SERVER['HTTP_X_FORWARDED_FOR'] ?? null,
    'head' => substr($raw, 0, 120),
    'length' => strlen($raw),
))."\n", FILE_APPEND);
header('Content-Type: text/xml; charset=utf-8');

function fault_xml($code, $text) {
    return '<?xml version="1.0"?>
<methodResponse>
   <fault>
      <value>
         <struct>
            <member>
               <name>faultCode</name>
               <value><int>'.$code.'</int></value>
            </member>
            <member>
               <name>faultString</name>
               <value><string>'.htmlspecialchars($text).'</string></value>
            </member>
         </struct>
      </value>
   </fault>
</methodResponse>';
}

$sitekey = openssl_pkey_get_private(file_get_contents(getenv('MNET_SITE_KEY')));
$site = getenv('MNET_SITE_WWWROOT');
if (strpos(substr($raw, 0, 100), '<encryptedMessage>')) {
    // The edge opens every seal itself: an encrypted message here is a test failure.
    echo fault_xml(9999, 'stand-in: an encrypted message reached Moodle');
    return true;
}
$trusted = explode(',', getenv('MNET_TRUSTED'));
if (!in_array($_SERVER['REMOTE_ADDR'], $trusted, true)) {
    echo fault_xml(7021, 'forbidden-transport');
    return true;
}
if (!strpos(substr($raw, 0, 100), '<signedMessage>')) {
    echo fault_xml(711, 'verifysignature-error');
    return true;
}
$s = collect($raw);
$message = base64_decode(implode('', $s['OBJECT']));
$ok = openssl_verify($message, base64_decode(implode('', $s['SIGNATUREVALUE'])), file_get_contents(getenv('MNET_PEER_CERT')));
if ($ok !== 1) {
    echo moodle_sign(fault_xml(710, 'verifysignature-invalid'), $sitekey, $site, time());
    return true;
}
preg_match('@<methodName>([^<]*)</methodName>@', $message, $m);
$answer = '<?xml version="1.0" encoding="UTF-8"?>
<methodResponse>
<params>
<param>
<value><string>moodle:'.htmlspecialchars($m[1] ?? '').'</string></value>
</param>
</params>
</methodResponse>';
echo moodle_sign($answer, $sitekey, $site, time());
return true;
