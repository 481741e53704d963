<?php
// PHP doing the MNet envelope work that moodle-edge's gateway does per inbound call (open the
// seal, verify the signature, sign the answer, seal it), on the same machine, for the
// `cargo bench --bench mnet` comparison. Prints the median microseconds per call.
//   php bench.php SITE_KEY PEER_CERT PEER_KEY SITE_CERT ROUNDS
require __DIR__.'/lib.php';
list(, $sitekeyf, $peercertf, $peerkeyf, $sitecertf, $rounds) = $_SERVER['argv'];
$sitekey = openssl_pkey_get_private(file_get_contents($sitekeyf));
$peerkey = openssl_pkey_get_private(file_get_contents($peerkeyf));
$peercert = file_get_contents($peercertf);
$sitecert = file_get_contents($sitecertf);
$call = xmlrpc_call('system/listMethods', array(str_repeat('x', 1800)));
$sealed = moodle_encrypt(moodle_sign($call, $peerkey, 'https://peer.example', time()), $sitecert, 'https://peer.example');
$answer = '<?xml version="1.0"?><methodResponse><params><param><value><string>'.str_repeat('y', 1900).'</string></value></param></params></methodResponse>';
$times = array();
for ($i = 0; $i < intval($rounds); $i++) {
    $t = hrtime(true);
    $c = collect($sealed);
    $key = array_pop($c['CIPHERVALUE']);
    $data = array_pop($c['CIPHERVALUE']);
    $payload = '';
    if (!openssl_open(base64_decode($data), $payload, base64_decode($key), $sitekey, 'RC4')) fail('open');
    $s = collect($payload);
    $message = base64_decode(implode('', $s['OBJECT']));
    if (openssl_verify($message, base64_decode(implode('', $s['SIGNATUREVALUE'])), $peercert) !== 1) fail('verify');
    $out = moodle_encrypt(moodle_sign($answer, $sitekey, 'https://site.example', time()), $peercert, 'https://site.example');
    $times[] = (hrtime(true) - $t) / 1000.0;
}
sort($times);
printf("%.1f\n", $times[intdiv(count($times), 2)]);
