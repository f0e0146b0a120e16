package proto

// Enrolment is the one exchange a gateway makes over HTTP rather than MQTT:
// POST EnrollPath with an EnrollRequest as JSON, before it has any
// credentials to connect to the broker with. The answer is an
// EnrollResponse with status 200 (enrolled), 202 (waiting for an operator
// to accept it: ask again later with the same request key), or an error
// status whose JSON body has an "error" message for the user.

// EnrollPath is the enrolment endpoint, relative to the server's URL.
const EnrollPath = "/api/v1/enroll"

// MaxEnrollBodyBytes bounds an enrolment request and response.
const MaxEnrollBodyBytes = 64 << 10

// EnrollRequest asks for a device's credentials.
type EnrollRequest struct {
	DeviceID string `json:"device_id"`
	// Token is an enrolment token, "ID.SECRET". Without one the device
	// asks to join and waits for an operator.
	Token string `json:"token,omitempty"`
	// RequestKey, without a token, is a random value the device keeps
	// while it waits, so that only it collects the credentials once an
	// operator accepts it.
	RequestKey string `json:"request_key,omitempty"`
	// CSR, optional, is a PEM certificate request made with a key the
	// device keeps; the answer then carries a client certificate for it,
	// which the broker accepts instead of the secret over TLS.
	CSR string `json:"csr,omitempty"`
}

// EnrollResponse carries a device's credentials and what it must pin.
type EnrollResponse struct {
	DeviceID string `json:"device_id"`
	// Secret is the device's MQTT password; its username and client id
	// are DeviceID.
	Secret string `json:"secret"`
	// Labels were given by the token; the agent reports them in hello.
	Labels map[string]string `json:"labels,omitempty"`
	// BrokerURL is where the device connects: tcp://host:port, or
	// tls://host:port.
	BrokerURL string `json:"broker_url"`
	// FleetKey is the fleet's ed25519 model-signing public key, base64;
	// empty when the server has none.
	FleetKey string `json:"fleet_key,omitempty"`
	// CACert is the PEM certificate of the CA that signs the server's TLS
	// certificates; empty when the server does not use TLS.
	CACert string `json:"ca_cert,omitempty"`
	// ClientCert is the PEM client certificate for the request's CSR.
	ClientCert string `json:"client_cert,omitempty"`
}
