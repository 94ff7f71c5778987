// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC721URIStorage} from "@openzeppelin/contracts/token/ERC721/extensions/ERC721URIStorage.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title AgentRegistry — ERC-8004 agent identities with owner-set spend permissions
/// @notice `register` mints an ERC-721 agentId to the developer who owns the agent. The agent's
/// hot wallet proves control with an EIP-712 signature (ERC-1271 for contract wallets). Metadata
/// keys the marketplace reads: `encryptionKey` (32-byte X25519 public key) and `endpoint`.
/// An owner can let the agent wallet pull up to `allowance` of a token per `period` from the
/// owner's balance, so a human caps what the agent can spend; revocable at once.
/// @dev Function and event names follow the ERC-8004 identity registry.
contract AgentRegistry is ERC721URIStorage, EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice One on-chain metadata entry.
    struct MetadataEntry {
        string metadataKey;
        bytes metadataValue;
    }

    /// @notice An owner's grant to the agent wallet for one token.
    struct SpendPermission {
        address grantor;
        uint48 period;
        uint48 periodStart;
        uint128 allowance;
        uint128 spentInPeriod;
    }

    // ---------------------------------------------------------------- errors

    /// @notice Only the agent's owner (or an approved operator) may do this.
    error NotAgentOwner(uint256 agentId, address caller);
    /// @notice `agentWallet` is set only through setAgentWallet.
    error ReservedMetadataKey(string metadataKey);
    /// @notice The wallet-binding signature's deadline has passed.
    error WalletSignatureExpired(uint256 deadline, uint256 timestamp);
    /// @notice The wallet-binding deadline is too far in the future.
    error DeadlineTooFar(uint256 deadline, uint256 maxDeadline);
    /// @notice The wallet did not sign this binding.
    error InvalidWalletSignature(uint256 agentId, address wallet);
    /// @notice A wallet or token address is zero.
    error ZeroAddress();
    /// @notice Only the agent's wallet may spend under its permission.
    error NotAgentWallet(uint256 agentId, address caller, address wallet);
    /// @notice There is no live permission (never granted, revoked, or the agent changed owner).
    error NoSpendPermission(uint256 agentId, address token);
    /// @notice The request is above what is left of this period's allowance.
    error SpendPermissionExceeded(uint256 agentId, address token, uint256 remaining, uint256 requested);
    /// @notice A permission period must be at least one second.
    error InvalidPeriod(uint256 period);

    // ---------------------------------------------------------------- events

    /// @notice ERC-8004: a new agent identity.
    event Registered(uint256 indexed agentId, string agentURI, address indexed owner);
    /// @notice ERC-8004: the agent's registration URI changed.
    event URIUpdated(uint256 indexed agentId, string newURI, address indexed updatedBy);
    /// @notice ERC-8004: a metadata entry changed (also emitted for `agentWallet`).
    event MetadataSet(
        uint256 indexed agentId, string indexed indexedMetadataKey, string metadataKey, bytes metadataValue
    );
    /// @notice The owner let the agent wallet spend `allowance` of `token` per `period` seconds.
    event SpendPermissionGranted(
        uint256 indexed agentId, address indexed token, address indexed grantor, uint256 allowance, uint256 period
    );
    /// @notice The owner withdrew the permission.
    event SpendPermissionRevoked(uint256 indexed agentId, address indexed token);
    /// @notice The agent wallet pulled `amount` of the owner's `token` to `to`.
    event SpendPermissionUsed(
        uint256 indexed agentId, address indexed token, address indexed to, uint256 amount, uint256 spentInPeriod
    );

    // ---------------------------------------------------------------- storage

    /// @notice EIP-712 type of the wallet-binding message (ERC-8004).
    bytes32 public constant AGENT_WALLET_SET_TYPEHASH =
        keccak256("AgentWalletSet(uint256 agentId,address newWallet,address owner,uint256 deadline)");
    /// @notice A wallet-binding signature may be valid for at most this long.
    uint256 public constant MAX_DEADLINE_DELAY = 5 minutes;
    /// @dev keccak256("agentWallet"): the reserved metadata key.
    bytes32 private constant AGENT_WALLET_KEY_HASH = keccak256("agentWallet");

    /// @notice Number of agents registered; ids run from 1.
    uint256 public agentCount;
    /// @dev Metadata by agent and key.
    mapping(uint256 agentId => mapping(string metadataKey => bytes metadataValue)) private _metadata;
    /// @dev The wallet the agent acts from.
    mapping(uint256 agentId => address wallet) private _agentWallet;
    /// @notice Spend permissions by agent and token.
    mapping(uint256 agentId => mapping(address token => SpendPermission)) private _permissions;

    // ---------------------------------------------------------------- constructor

    constructor() ERC721("agentmarket Agent", "AGENT") EIP712("ERC8004IdentityRegistry", "1") {}

    // ---------------------------------------------------------------- external: identity

    /// @notice Registers an agent with no URI; the caller owns it and is its first wallet.
    function register() external returns (uint256 agentId) {
        agentId = _register("");
    }

    /// @notice Registers an agent whose registration file lives at `agentURI`.
    function register(string calldata agentURI) external returns (uint256 agentId) {
        agentId = _register(agentURI);
    }

    /// @notice Registers an agent with a URI and on-chain metadata.
    function register(string calldata agentURI, MetadataEntry[] calldata metadata) external returns (uint256 agentId) {
        agentId = _register(agentURI);
        for (uint256 i; i < metadata.length; ++i) {
            _setMetadata(agentId, metadata[i].metadataKey, metadata[i].metadataValue);
        }
    }

    /// @notice Points the agent at a new registration file.
    function setAgentURI(uint256 agentId, string calldata newURI) external {
        _checkOwnerOrOperator(agentId);
        _setTokenURI(agentId, newURI);
        emit URIUpdated(agentId, newURI, msg.sender);
    }

    /// @notice Sets one metadata entry (not `agentWallet`).
    function setMetadata(uint256 agentId, string calldata metadataKey, bytes calldata metadataValue) external {
        _checkOwnerOrOperator(agentId);
        _setMetadata(agentId, metadataKey, metadataValue);
    }

    /// @notice Binds `newWallet` to the agent; `signature` is newWallet's EIP-712 AgentWalletSet.
    function setAgentWallet(uint256 agentId, address newWallet, uint256 deadline, bytes calldata signature)
        external
    {
        address owner = _checkOwnerOrOperator(agentId);
        if (newWallet == address(0)) revert ZeroAddress();
        if (block.timestamp > deadline) revert WalletSignatureExpired(deadline, block.timestamp);
        if (deadline > block.timestamp + MAX_DEADLINE_DELAY) {
            revert DeadlineTooFar(deadline, block.timestamp + MAX_DEADLINE_DELAY);
        }
        bytes32 digest =
            _hashTypedDataV4(keccak256(abi.encode(AGENT_WALLET_SET_TYPEHASH, agentId, newWallet, owner, deadline)));
        if (!SignatureChecker.isValidSignatureNow(newWallet, digest, signature)) {
            revert InvalidWalletSignature(agentId, newWallet);
        }
        _writeAgentWallet(agentId, newWallet);
    }

    /// @notice Removes the agent's wallet binding (its spend permissions stop working too).
    function unsetAgentWallet(uint256 agentId) external {
        _checkOwnerOrOperator(agentId);
        _writeAgentWallet(agentId, address(0));
    }

    // ---------------------------------------------------------------- external: spend permissions

    /// @notice Lets the agent wallet pull up to `allowance` of `token` per `period` seconds from
    /// the caller (the agent's owner). The owner must also approve this registry on the token.
    function grantSpendPermission(uint256 agentId, address token, uint256 allowance, uint256 period) external {
        if (_requireOwned(agentId) != msg.sender) revert NotAgentOwner(agentId, msg.sender);
        if (token == address(0)) revert ZeroAddress();
        if (period == 0 || period > type(uint48).max) revert InvalidPeriod(period);
        _permissions[agentId][token] = SpendPermission({
            grantor: msg.sender,
            period: uint48(period),
            periodStart: uint48(block.timestamp),
            allowance: uint128(allowance > type(uint128).max ? type(uint128).max : allowance),
            spentInPeriod: 0
        });
        emit SpendPermissionGranted(agentId, token, msg.sender, allowance, period);
    }

    /// @notice Withdraws the permission at once.
    function revokeSpendPermission(uint256 agentId, address token) external {
        if (_requireOwned(agentId) != msg.sender) revert NotAgentOwner(agentId, msg.sender);
        delete _permissions[agentId][token];
        emit SpendPermissionRevoked(agentId, token);
    }

    /// @notice Called by the agent wallet: moves `amount` of the owner's `token` to `to`.
    function spendFromOwner(uint256 agentId, address token, address to, uint256 amount) external nonReentrant {
        address wallet = _agentWallet[agentId];
        if (msg.sender != wallet || wallet == address(0)) revert NotAgentWallet(agentId, msg.sender, wallet);
        SpendPermission storage permission = _permissions[agentId][token];
        address grantor = permission.grantor;
        if (grantor == address(0) || grantor != _ownerOf(agentId)) revert NoSpendPermission(agentId, token);
        if (block.timestamp >= uint256(permission.periodStart) + permission.period) {
            uint256 elapsed = block.timestamp - permission.periodStart;
            permission.periodStart += uint48(elapsed - (elapsed % permission.period));
            permission.spentInPeriod = 0;
        }
        uint256 remaining = permission.allowance - permission.spentInPeriod;
        if (amount > remaining) revert SpendPermissionExceeded(agentId, token, remaining, amount);
        permission.spentInPeriod += uint128(amount);
        IERC20(token).safeTransferFrom(grantor, to, amount);
        emit SpendPermissionUsed(agentId, token, to, amount, permission.spentInPeriod);
    }

    // ---------------------------------------------------------------- views

    /// @notice ERC-8004: the wallet the agent acts from.
    function getAgentWallet(uint256 agentId) external view returns (address) {
        _requireOwned(agentId);
        return _agentWallet[agentId];
    }

    /// @notice ERC-8004: one metadata entry.
    function getMetadata(uint256 agentId, string calldata metadataKey) external view returns (bytes memory) {
        return _metadata[agentId][metadataKey];
    }

    /// @notice The permission for `token` and what is left of it in the current period.
    function spendPermission(uint256 agentId, address token)
        external
        view
        returns (SpendPermission memory permission, uint256 remaining)
    {
        permission = _permissions[agentId][token];
        if (permission.grantor == address(0) || permission.grantor != _ownerOf(agentId)) return (permission, 0);
        bool rolled = block.timestamp >= uint256(permission.periodStart) + permission.period;
        remaining = permission.allowance - (rolled ? 0 : permission.spentInPeriod);
    }

    /// @notice The EIP-712 digest a wallet signs to be bound to `agentId`.
    function agentWalletDigest(uint256 agentId, address newWallet, address owner, uint256 deadline)
        external
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(AGENT_WALLET_SET_TYPEHASH, agentId, newWallet, owner, deadline)));
    }

    // ---------------------------------------------------------------- internal

    function _register(string memory agentURI) internal returns (uint256 agentId) {
        agentId = ++agentCount;
        _safeMint(msg.sender, agentId);
        if (bytes(agentURI).length > 0) _setTokenURI(agentId, agentURI);
        _writeAgentWallet(agentId, msg.sender);
        emit Registered(agentId, agentURI, msg.sender);
    }

    function _setMetadata(uint256 agentId, string calldata metadataKey, bytes calldata metadataValue) internal {
        if (keccak256(bytes(metadataKey)) == AGENT_WALLET_KEY_HASH) revert ReservedMetadataKey(metadataKey);
        _metadata[agentId][metadataKey] = metadataValue;
        emit MetadataSet(agentId, metadataKey, metadataKey, metadataValue);
    }

    function _writeAgentWallet(uint256 agentId, address wallet) internal {
        _agentWallet[agentId] = wallet;
        bytes memory value = wallet == address(0) ? bytes("") : abi.encodePacked(wallet);
        _metadata[agentId]["agentWallet"] = value;
        emit MetadataSet(agentId, "agentWallet", "agentWallet", value);
    }

    function _checkOwnerOrOperator(uint256 agentId) internal view returns (address owner) {
        owner = _requireOwned(agentId);
        if (!_isAuthorized(owner, msg.sender, agentId)) revert NotAgentOwner(agentId, msg.sender);
    }

    /// @dev A transferred agent loses its wallet binding; permissions die with the old owner.
    function _update(address to, uint256 tokenId, address auth) internal override returns (address from) {
        from = super._update(to, tokenId, auth);
        if (from != address(0) && to != address(0)) _writeAgentWallet(tokenId, address(0));
    }
}
