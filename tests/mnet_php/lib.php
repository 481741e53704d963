<?php
// What a Moodle MNet site does to envelopes, with PHP's openssl functions as mnet/lib.php uses
// them; shared by peer.php (a calling peer) and moodle.php (a stand-in Moodle server).

function fail($msg) { fwrite(STDERR, "mnet_php: $msg\n"); exit(2); }

function moodle_sign($message, $privatekey, $wwwroot, $timestamp) {
    $digest = sha1($message);
    $sig = '';
    if (!openssl_sign($message, $sig, $privatekey)) fail('openssl_sign failed');
    return '<?xml version="1.0" encoding="iso-8859-1"?>
    <signedMessage>
        <Signature Id="MoodleSignature" xmlns="http://www.w3.org/2000/09/xmldsig#">
            <SignedInfo>
                <CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"/>
                <SignatureMethod Algorithm="http://www.w3.org/2000/09/xmldsig#rsa-sha1"/>
                <Reference URI="#XMLRPC-MSG">
                    <DigestMethod Algorithm="http://www.w3.org/2000/09/xmldsig#sha1"/>
                    <DigestValue>'.$digest.'</DigestValue>
                </Reference>
            </SignedInfo>
            <SignatureValue>'.base64_encode($sig).'</SignatureValue>
            <KeyInfo>
                <RetrievalMethod URI="'.$wwwroot.'/mnet/publickey.php"/>
            </KeyInfo>
        </Signature>
        <object ID="XMLRPC-MSG">'.base64_encode($message).'</object>
        <wwwroot>'.$wwwroot.'</wwwroot>
        <timestamp>'.$timestamp.'</timestamp>
    </signedMessage>';
}

function moodle_encrypt($message, $remote_certificate, $wwwroot) {
    $publickey = openssl_get_publickey($remote_certificate);
    if ($publickey === false) fail('bad recipient certificate');
    $sealed = '';
    $keys = array();
    if (openssl_seal($message, $sealed, $keys, array($publickey), 'RC4') === false) {
        fail('openssl_seal failed: '.openssl_error_string());
    }
    $symmetrickey = array_pop($keys);
    return '<?xml version="1.0" encoding="iso-8859-1"?>
    <encryptedMessage>
        <EncryptedData Id="ED" xmlns="http://www.w3.org/2001/04/xmlenc#">
            <EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#arcfour"/>
            <ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
                <ds:RetrievalMethod URI="#EK" Type="http://www.w3.org/2001/04/xmlenc#EncryptedKey"/>
                <ds:KeyName>XMLENC</ds:KeyName>
            </ds:KeyInfo>
            <CipherData>
                <CipherValue>'.base64_encode($sealed).'</CipherValue>
            </CipherData>
        </EncryptedData>
        <EncryptedKey Id="EK" xmlns="http://www.w3.org/2001/04/xmlenc#">
            <EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#rsa-1_5"/>
            <ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
                <ds:KeyName>SSLKEY</ds:KeyName>
            </ds:KeyInfo>
            <CipherData>
                <CipherValue>'.base64_encode($symmetrickey).'</CipherValue>
            </CipherData>
            <ReferenceList>
                <DataReference URI="#ED"/>
            </ReferenceList>
            <CarriedKeyName>XMLENC</CarriedKeyName>
        </EncryptedKey>
        <wwwroot>'.$wwwroot.'</wwwroot>
    </encryptedMessage>';
}

// Collects element text by tag name over the whole document, concatenating repeats, as
// Moodle's expat-based mnet_encxml_parser does.
function collect($xml) {
    $p = xml_parser_create();
    $values = array();
    if (!xml_parse_into_struct($p, $xml, $values)) fail('not well formed: '.xml_error_string(xml_get_error_code($p)));
    $out = array();
    foreach ($values as $v) {
        if (isset($v['value']) && ($v['type'] == 'complete' || $v['type'] == 'cdata')) {
            $out[$v['tag']][] = $v['value'];
        }
    }
    return $out;
}

function xmlrpc_call($method, $args) {
    $x = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<methodCall>\n<methodName>".htmlspecialchars($method)."</methodName>\n<params>\n";
    foreach ($args as $a) {
        $x .= "<param>\n<value><string>".htmlspecialchars($a)."</string></value>\n</param>\n";
    }
    return $x."</params>\n</methodCall>\n";
}

